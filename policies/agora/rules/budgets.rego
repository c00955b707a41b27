package agora.rules

# Usage budgets (data `budgets`), judged on what the gateway counted before
# this request (input.usage; docs/policy.md). A budget is
# {"requests": {window: limit}, "tokens": {window: limit}}, the windows named
# as the gateway counts them (usage.windows: minute, day); tokens are totals
# (prompt + completion). A null or absent limit means no limit.
#   anonymous      the budget of anonymous callers (counted together)
#   authenticated  the budget of each authenticated caller in no budgeted group
#   groups         {group: budget}: replaces the authenticated budget; a caller
#                  in several budgeted groups gets, for each limit, the highest
#                  (null or absent in any of them: no limit); a group whose
#                  budget is null has no limits at all
#   group_totals   {group: budget}: what all callers of the group may use together
# A spent budget denies with status 429 and retry_after_s (the gateway answers
# 429 with Retry-After) when it is the only reason to deny. Without
# input.usage (a policy evaluated by hand, say), no budget is ever spent.

# Each rule or function evaluated costs far more than an expression, so the
# caller's budget is one object, built once and only when usage was counted,
# and the counts are read in place.

# The budgeted groups the caller is in (only authenticated callers have groups).
budget_groups := {g |
	some g in groups
	_ = data.agora.config.budgets.groups[g]
}

# The caller's budget, {kind: {window: limit}}: its budgeted group's, or with
# several, per limit the highest (and no limit where any of them sets none),
# else the authenticated or the anonymous budget.
caller_budget := data.agora.config.budgets.groups[g] if {
	count(budget_groups) == 1
	some g in budget_groups
} else := {kind: limits |
	some kind in ["requests", "tokens"]
	limits := {window: max(ls) |
		some first in budget_groups
		some window, _ in data.agora.config.budgets.groups[first][kind]
		ls := [l |
			some g in budget_groups
			l := data.agora.config.budgets.groups[g][kind][window]
			is_number(l)
		]
		count(ls) == count(budget_groups)
	}
} if {
	count(budget_groups) > 1
} else := data.agora.config.budgets.authenticated if {
	authenticated
} else := data.agora.config.budgets.anonymous

# The windows whose budget is spent, each with its reasons: the caller's own
# budget, then its groups' totals. A count at or over its limit spends it.
spent[window] contains msg if {
	some window, use in input.usage.caller
	limit := caller_budget.requests[window]
	is_number(limit)
	n := use.requests
	is_number(n)
	n >= limit
	msg := sprintf("the budget of %v requests per %s is spent for this caller", [limit, window])
}

spent[window] contains msg if {
	some window, use in input.usage.caller
	limit := caller_budget.tokens[window]
	is_number(limit)
	n := use.tokens.total
	is_number(n)
	n >= limit
	msg := sprintf("the budget of %v tokens per %s is spent for this caller", [limit, window])
}

spent[window] contains msg if {
	some g in groups
	budget := data.agora.config.budgets.group_totals[g]
	some window, use in input.usage.groups[g]
	some kind, field in {"requests": ["requests"], "tokens": ["tokens", "total"]}
	limit := budget[kind][window]
	is_number(limit)
	n := object.get(use, field, null)
	is_number(n)
	n >= limit
	msg := sprintf("the budget of %v %s per %s is spent for the group %s", [limit, kind, window, shown(g)])
}

# A limit of the caller's budget that is neither a number nor null fails
# closed: the caller's requests are refused until it is fixed.
violation contains "budgets hold a limit that is not a number or null; the policy refuses requests until it is fixed" if {
	_ = input.usage.caller
	some limits in caller_budget
	some limit in limits
	limit != null
	not is_number(limit)
}

budget_violation contains msg if {
	some msgs in spent
	some msg in msgs
}

violation contains msg if some msg in budget_violation

# When the spent budgets are the only reasons to deny, the decision says so:
# status 429, and the seconds until the last of them resets.
budget_only if {
	count(budget_violation) > 0
	every msg in deny {
		msg in budget_violation
	}
}

retry_after_s := max([s |
	some window, _ in spent
	s := resets_in_s(window)
])

resets_in_s(window) := s if {
	s := input.usage.windows[window].resets_in_s
	is_number(s)
	s > 0
} else := 60
