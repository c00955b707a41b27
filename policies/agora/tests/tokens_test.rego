# max_tokens caps per tier, and the max_tokens obligation.
package agora.tests.tokens_test

import data.agora.main
import data.agora.tests.fixtures as f

test_caps_per_tier if {
	main.max_tokens == 256 with input as f.chat(f.anonymous, "demo-small", "hi")
	main.max_tokens == 1024 with input as f.chat(f.user_without_groups, "demo-small", "hi")
	main.max_tokens == 1024 with input as f.chat(f.user(["admins"]), "demo-small", "hi")
	main.max_tokens == 4096 with input as f.chat(f.user(["members"]), "demo-small", "hi")
	main.max_tokens == 4096 with input as f.chat(f.user(["admins", "members"]), "demo-small", "hi")
}

test_at_the_cap_is_allowed if {
	main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 256})
	main.allow with input as f.chat_with(f.user_without_groups, "demo-small", "hi", {"max_tokens": 1024})
	main.allow with input as f.chat_with(f.user(["members"]), "demo-large", "hi", {"max_tokens": 4096})
}

test_above_the_cap_is_denied_with_the_cap if {
	d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 257})
	d == {"allow": false, "reasons": ["max_tokens 257 exceeds the cap of 256 tokens for this caller"], "max_tokens": 256}
	e := main with input as f.chat_with(f.user_without_groups, "demo-small", "hi", {"max_tokens": 2000})
	e.reasons == ["max_tokens 2000 exceeds the cap of 1024 tokens for this caller"]
	g := main with input as f.chat_with(f.user(["members"]), "demo-large", "hi", {"max_tokens": 5000})
	g.reasons == ["max_tokens 5000 exceeds the cap of 4096 tokens for this caller"]
}

test_every_token_field_is_checked if {
	d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_completion_tokens": 300})
	d.reasons == ["max_completion_tokens 300 exceeds the cap of 256 tokens for this caller"]
	r := json.patch(f.response(f.anonymous, "demo-small", "hi"), [{"op": "add", "path": "/body/max_output_tokens", "value": 1000}])
	e := main with input as r
	e.reasons == ["max_output_tokens 1000 exceeds the cap of 256 tokens for this caller"]
}

test_no_requested_tokens_is_allowed if {
	d := main with input as f.chat(f.anonymous, "demo-small", "hi")
	d.allow
	main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": null})
}

# A token field must be a positive integer, whatever the caller's cap (the
# gateway refuses such fields too, but the policy does not rely on it).
test_token_fields_must_be_positive_integers if {
	every field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
		every v in [0, -1, 1.5, "100", true, [100], {"n": 1}] {
			d := main with input as f.chat_with(f.user(["members"]), "demo-small", "hi", {field: v})
			d.reasons == [sprintf("%s must be a positive integer", [field])]
		}
	}
	main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 1})
	main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 100.0})
	c := f.config_set("/max_tokens/anonymous", null)
	d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": -1}) with data.agora.config as c
	d.reasons == ["max_tokens must be a positive integer"]
}

test_a_bad_and_a_capped_field_give_one_reason_each if {
	d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 1000, "max_completion_tokens": 1.5})
	d.reasons == [
		"max_completion_tokens must be a positive integer",
		"max_tokens 1000 exceeds the cap of 256 tokens for this caller",
	]
	e := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 1000.5})
	e.reasons == ["max_tokens must be a positive integer"]
}

# n (choices) and best_of: positive integers, at most data max_choices.
test_choices_within_the_cap if {
	every field in ["n", "best_of"] {
		main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {field: 1})
		main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {field: 8})
		main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {field: null})
		d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {field: 9})
		d.reasons == [sprintf("%s 9 exceeds the cap of 8 choices", [field])]
	}
	c := main with input as f.completion(f.anonymous, "demo-small", "hi") with input.body.n as 100
	c.reasons == ["n 100 exceeds the cap of 8 choices"]
}

test_choices_must_be_positive_integers if {
	every field in ["n", "best_of"] {
		every v in [0, -1, 1.5, "2", false, [2]] {
			d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {field: v})
			d.reasons == [sprintf("%s must be a positive integer", [field])]
		}
	}
}

test_choices_cap_comes_from_data if {
	inp := f.chat_with(f.anonymous, "demo-small", "hi", {"n": 50})
	main.allow with input as inp with data.agora.config as f.config_set("/max_choices", null)
	main.allow with input as inp with data.agora.config as json.remove(data.agora.config, ["max_choices"])
	d := main with input as inp with data.agora.config as f.config_set("/max_choices", 2)
	d.reasons == ["n 50 exceeds the cap of 2 choices"]
}

test_malformed_choices_cap_fails_closed if {
	every bad in [0, -3, 2.5, "8", true, [8]] {
		d := main with input as f.chat(f.anonymous, "demo-small", "hi") with data.agora.config as f.config_set("/max_choices", bad)
		d.reasons == ["max_choices is not a positive integer or null; the policy refuses requests until it is fixed"]
	}
}

test_highest_group_cap_wins_and_overrides_default if {
	c := {"anonymous": 10, "authenticated": 100, "groups": {"a": 50, "b": 500, "c": 20}}
	main.max_tokens == 500 with input as f.chat(f.user(["a", "b", "c"]), "demo-small", "hi") with data.agora.config as f.config_set("/max_tokens", c)
	main.max_tokens == 50 with input as f.chat(f.user(["a", "c"]), "demo-small", "hi") with data.agora.config as f.config_set("/max_tokens", c)
	main.max_tokens == 100 with input as f.chat(f.user(["z"]), "demo-small", "hi") with data.agora.config as f.config_set("/max_tokens", c)
}

test_null_or_absent_cap_means_no_cap if {
	c := {"anonymous": null, "groups": {"a": 50, "unlimited": null}}
	d := main with input as f.chat_with(f.anonymous, "demo-small", "hi", {"max_tokens": 100000}) with data.agora.config as f.config_set("/max_tokens", c)
	d == {"allow": true, "reasons": [], "max_tokens": null}
	main.max_tokens == null with input as f.chat(f.user(["a", "unlimited"]), "demo-small", "hi") with data.agora.config as f.config_set("/max_tokens", c)
	main.max_tokens == null with input as f.chat(f.user_without_groups, "demo-small", "hi") with data.agora.config as f.config_set("/max_tokens", c)
}

test_anonymous_cap_ignores_claimed_groups if {
	spoof := {"authenticated": false, "claims": {"groups": ["members"]}}
	main.max_tokens == 256 with input as f.chat(spoof, "demo-small", "hi")
}
