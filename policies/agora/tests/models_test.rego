# Model access: anonymous list, authenticated list, groups, globs, unlisted models.
package agora.tests.models_test

import data.agora.main
import data.agora.tests.fixtures as f

cfg := {
	"models": {
		"anonymous": ["open-*"],
		"authenticated": ["team-model"],
		"groups": {"org/*": ["research"], "org/secret": ["security"]},
	},
	"max_tokens": {},
}

test_anonymous_may_use_listed_models if {
	d := main with input as f.chat(f.anonymous, "demo-small", "hi")
	d.allow
	d.reasons == []
	main.allow with input as f.embedding(f.anonymous, "demo-embed", "hi")
}

test_anonymous_denied_group_model_names_groups if {
	d := main with input as f.chat(f.anonymous, "demo-large", "hi")
	d.reasons == ["model demo-large is limited to the groups [admins, members]; caller is anonymous"]
}

test_anonymous_denied_unlisted_model if {
	d := main with input as f.chat(f.anonymous, "gpt-x", "hi") with data.agora.config as cfg
	d.reasons == ["model gpt-x is not offered by this policy"]
}

test_anonymous_denied_authenticated_only_model if {
	d := main with input as f.chat(f.anonymous, "team-model", "hi") with data.agora.config as cfg
	d.reasons == ["model team-model requires an authenticated caller; caller is anonymous"]
}

test_authenticated_list if {
	main.allow with input as f.chat(f.user_without_groups, "team-model", "hi") with data.agora.config as cfg
	main.allow with input as f.chat(f.user_without_groups, "open-1", "hi") with data.agora.config as cfg
}

test_authenticated_without_group_denied_names_required_groups if {
	d := main with input as f.chat(f.user_without_groups, "demo-large", "hi")
	d.reasons == ["model demo-large is limited to the groups [admins, members]; caller is in none of them"]
	e := main with input as f.chat(f.user(["guests"]), "demo-large", "hi")
	e.reasons == d.reasons
}

test_group_members_allowed if {
	d := main with input as f.chat(f.user(["guests", "members"]), "demo-large", "hi")
	d == {"allow": true, "reasons": [], "max_tokens": 4096}
}

test_admins_may_use_any_model if {
	main.allow with input as f.chat(f.user(["admins"]), "demo-large", "hi")
	main.allow with input as f.chat(f.user(["admins"]), "vendor/some-model:latest", "hi")
}

test_globs_have_no_delimiters if {
	main.allow with input as f.chat(f.user(["research"]), "org/deep/model", "hi") with data.agora.config as cfg
	not main.allow with input as f.chat(f.user(["research"]), "other/model", "hi") with data.agora.config as cfg
}

test_groups_union_over_matching_patterns if {
	main.allow with input as f.chat(f.user(["research"]), "org/secret", "hi") with data.agora.config as cfg
	main.allow with input as f.chat(f.user(["security"]), "org/secret", "hi") with data.agora.config as cfg
	d := main with input as f.chat(f.user(["sales"]), "org/secret", "hi") with data.agora.config as cfg
	d.reasons == ["model org/secret is limited to the groups [research, security]; caller is in none of them"]
}

test_groups_claim_as_a_single_string if {
	u := json.patch(f.user_without_groups, [{"op": "add", "path": "/claims/groups", "value": "members"}])
	d := main with input as f.chat(u, "demo-large", "hi")
	d == {"allow": true, "reasons": [], "max_tokens": 4096}
}

test_groups_claim_of_odd_types_means_no_groups if {
	every odd in [null, 7, {"members": true}, [7, null, ["members"]]] {
		u := json.patch(f.user_without_groups, [{"op": "add", "path": "/claims/groups", "value": odd}])
		not main.allow with input as f.chat(u, "demo-large", "hi")
	}
}

test_groups_claim_name_is_configurable if {
	u := json.patch(f.user_without_groups, [{"op": "add", "path": "/claims/roles", "value": ["members"]}])
	main.allow with input as f.chat(u, "demo-large", "hi") with data.agora.config as f.config_set("/groups_claim", "roles")
	not main.allow with input as f.chat(u, "demo-large", "hi")
}

test_anonymous_caller_claims_are_ignored if {
	spoof := {"authenticated": false, "sub": null, "iss": null, "claims": {"groups": ["admins"]}}
	not main.allow with input as f.chat(spoof, "demo-large", "hi")
	truthy := {"authenticated": "true", "claims": {"groups": ["admins"]}}
	not main.allow with input as f.chat(truthy, "demo-large", "hi")
}

test_no_model_is_denied if {
	d := main with input as f.chat(f.user(["admins"]), null, "hi")
	d.reasons == ["request does not name a model"]
	e := main with input as json.remove(f.embedding(f.anonymous, "demo-embed", "x"), ["model", "body/model"])
	e.reasons == ["request does not name a model"]
	g := main with input as f.chat(f.anonymous, "", "hi")
	g.reasons == ["request does not name a model"]
}

test_long_model_names_are_cut_in_reasons if {
	long := concat("", [x | some _ in numbers.range(1, 100); x := "ab"])
	d := main with input as f.chat(f.anonymous, long, "hi") with data.agora.config as cfg
	d.reasons == [sprintf("model %s... is not offered by this policy", [substring(long, 0, 80)])]
}

test_no_models_configured_denies_everything if {
	d := main with input as f.chat(f.user(["admins"]), "demo-small", "hi") with data.agora.config as {}
	d == {"allow": false, "reasons": ["model demo-small is not offered by this policy"], "max_tokens": null}
}
