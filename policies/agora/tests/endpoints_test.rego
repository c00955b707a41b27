# Model listing is open to everybody; other endpoints only when allowed in data.
package agora.tests.endpoints_test

import data.agora.main
import data.agora.tests.fixtures as f

test_listing_models_is_allowed_for_everyone if {
	every caller in [f.anonymous, f.user_without_groups, f.user(["admins"])] {
		d := main with input as f.models_list(caller)
		d.allow
		d.reasons == []
	}
}

test_retrieving_any_model_is_allowed if {
	inp := object.union(f.models_list(f.anonymous), {"model": "demo-large", "request": {"method": "GET", "path": "/v1/models/demo-large"}})
	main.allow with input as inp
}

test_other_endpoints_denied_by_default if {
	inp := f.doc("other", "POST", "/v1/files", f.user(["admins"]), {})
	d := main with input as inp
	d == {"allow": false, "reasons": ["endpoint POST /v1/files is not allowed by the policy"], "max_tokens": 1024}
}

test_unknown_api_values_are_other if {
	inp := f.doc("audio.speech", "POST", "/v1/audio/speech", f.user(["admins"]), {"model": "tts-1", "input": "hi"})
	main.reasons == ["endpoint POST /v1/audio/speech is not allowed by the policy"] with input as inp
}

test_other_endpoints_allowed_by_path_glob if {
	inp := f.doc("other", "GET", "/v1/files/file-123", f.anonymous, {})
	main.allow with input as inp with data.agora.config as f.config_set("/other_endpoints/allowed_paths", ["/v1/files*"])
	not main.allow with input as inp with data.agora.config as f.config_set("/other_endpoints/allowed_paths", ["/v1/batches*"])
}

test_allowed_other_endpoint_still_checks_a_named_model if {
	inp := f.doc("other", "POST", "/v1/audio/speech", f.anonymous, {"model": "demo-large", "input": "hi"})
	d := main with input as inp with data.agora.config as f.config_set("/other_endpoints/allowed_paths", ["/v1/audio/*"])
	d.reasons == ["model demo-large is limited to the groups [admins, members]; caller is anonymous"]
}

test_long_paths_are_cut_in_reasons if {
	long := concat("", ["/v1/", concat("", [x | some _ in numbers.range(1, 100); x := "z"])])
	d := main with input as f.doc("other", "GET", long, f.anonymous, {})
	d.reasons == [sprintf("endpoint GET %s... is not allowed by the policy", [substring(long, 0, 80)])]
}
