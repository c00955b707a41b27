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

test_non_numeric_token_fields_are_denied if {
	d := main with input as f.chat_with(f.user(["members"]), "demo-small", "hi", {"max_tokens": "5000"})
	d.reasons == ["max_tokens must be a number"]
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
