# Usage budgets: requests and tokens per window, 429 with retry_after_s.
package agora.tests.budgets_test

import data.agora.main
import data.agora.tests.fixtures as f

fresh := {"minute": f.use(0, 0), "day": f.use(0, 0)}

test_no_usage_counted_is_no_budget_spent if {
	d := main with input as f.chat(f.anonymous, "demo-small", "hi")
	d == {"allow": true, "reasons": [], "max_tokens": 256}
	e := main with input as f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), fresh, {})
	e == {"allow": true, "reasons": [], "max_tokens": 256}
}

test_anonymous_requests_per_minute if {
	under := f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), {"minute": f.use(19, 0)}, {})
	main.allow with input as under
	over := f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), {"minute": f.use(20, 0)}, {})
	d := main with input as over
	d == {
		"allow": false,
		"reasons": ["the budget of 20 requests per minute is spent for this caller"],
		"max_tokens": 256,
		"status": 429,
		"retry_after_s": 17,
	}
}

test_anonymous_tokens_per_day if {
	main.allow with input as f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), {"day": f.use(3, 19999)}, {})
	d := main with input as f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), {"day": f.use(3, 20000)}, {})
	d.reasons == ["the budget of 20000 tokens per day is spent for this caller"]
	d.status == 429
	d.retry_after_s == 3600
}

test_retry_after_is_the_latest_reset if {
	both := {"minute": f.use(20, 0), "day": f.use(20, 20000)}
	d := main with input as f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), both, {})
	count(d.reasons) == 2
	d.retry_after_s == 3600
}

test_members_have_more_and_admins_none if {
	busy := {"minute": f.use(1000, 0), "day": f.use(1000, 1000000)}
	main.allow with input as f.with_usage(f.chat(f.user(["members"]), "demo-small", "hi"), busy, {})
	main.allow with input as f.with_usage(f.chat(f.user(["admins"]), "demo-small", "hi"), busy, {})
	d := main with input as f.with_usage(f.chat(f.user_without_groups, "demo-small", "hi"), busy, {})
	d.reasons == [
		"the budget of 200000 tokens per day is spent for this caller",
		"the budget of 60 requests per minute is spent for this caller",
	]
	d.status == 429
}

test_highest_group_limit_wins_and_null_means_none if {
	c := f.config_set("/budgets/groups", {"a": {"requests": {"minute": 5}}, "b": {"requests": {"minute": 50}}, "c": {"tokens": {"day": 1}}})
	use := {"minute": f.use(10, 0)}
	main.allow with input as f.with_usage(f.chat(f.user(["a", "b"]), "demo-small", "hi"), use, {}) with data.agora.config as c
	not main.allow with input as f.with_usage(f.chat(f.user(["a"]), "demo-small", "hi"), use, {}) with data.agora.config as c

	# c sets no request limit: in c, requests are not limited at all
	main.allow with input as f.with_usage(f.chat(f.user(["a", "c"]), "demo-small", "hi"), use, {}) with data.agora.config as c
}

test_group_totals if {
	c := f.config_set("/budgets/group_totals", {"members": {"tokens": {"day": 1000}}})
	inp := f.with_usage(f.chat(f.user(["members"]), "demo-small", "hi"), fresh, {"members": {"day": f.use(9, 1000)}})
	d := main with input as inp with data.agora.config as c
	d.reasons == ["the budget of 1000 tokens per day is spent for the group members"]
	d.status == 429
	main.allow with input as inp
}

test_another_reason_makes_it_a_plain_deny if {
	over := f.with_usage(f.chat(f.anonymous, "demo-large", "hi"), {"minute": f.use(20, 0)}, {})
	d := main with input as over
	count(d.reasons) == 2
	object.keys(d) == {"allow", "reasons", "max_tokens"}
}

test_listing_models_is_never_limited if {
	over := f.with_usage(f.models_list(f.anonymous), {"minute": f.use(500, 0)}, {})
	main.allow with input as over
}

test_malformed_usage_counts_as_none if {
	odd := [{"minute": "x"}, {"minute": {"requests": "20"}}, "usage", [1], {"minute": {"tokens": 5}}]
	every u in odd {
		main.allow with input as f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), u, {})
	}
}

test_budgets_without_limits_limit_nothing if {
	busy := {"minute": f.use(1000, 0), "day": f.use(1000, 10000000)}
	inp := f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), busy, {})
	main.allow with input as inp with data.agora.config as json.remove(data.agora.config, ["budgets"])
	main.allow with input as inp with data.agora.config as f.config_set("/budgets/anonymous", null)
	no_limits := json.patch(data.agora.config, [
		{"op": "add", "path": "/budgets/anonymous/requests/minute", "value": null},
		{"op": "remove", "path": "/budgets/anonymous/tokens"},
	])
	main.allow with input as inp with data.agora.config as no_limits
}

test_a_malformed_limit_fails_closed if {
	inp := f.with_usage(f.chat(f.anonymous, "demo-small", "hi"), fresh, {})
	c := f.config_set("/budgets/anonymous/requests/minute", "20")
	d := main with input as inp with data.agora.config as c
	d.reasons == ["budgets hold a limit that is not a number or null; the policy refuses requests until it is fixed"]
	object.keys(d) == {"allow", "reasons", "max_tokens"}
	main.allow with input as f.chat(f.anonymous, "demo-small", "hi") with data.agora.config as c
	main.allow with input as f.with_usage(f.chat(f.user(["admins"]), "demo-small", "hi"), fresh, {})
}
