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

budget_kinds := ["requests", "tokens"]

# How much of `kind` a window's usage shows (0 when it shows none).
used(use, "requests") := n if {
	n := use.requests
	is_number(n)
} else := 0

used(use, "tokens") := n if {
	n := use.tokens.total
	is_number(n)
} else := 0

# The budgeted groups the caller is in (only authenticated callers have groups).
budget_groups := {g |
	budgets := data.agora.config.budgets.groups
	is_object(budgets)
	some g in groups
	g in object.keys(budgets)
}

# A limit: a number, zero or more.
valid_limit(l) if {
	is_number(l)
	l >= 0
}

# A budgeted group's limit of `kind` in `window`; null: none.
group_limit(g, kind, window) := l if {
	l := data.agora.config.budgets.groups[g][kind][window]
	valid_limit(l)
} else := null

# The caller's limit of `kind` in `window`; null: none.
budget_limit(kind, window) := null if {
	some g in budget_groups
	group_limit(g, kind, window) == null
} else := max(limits) if {
	limits := [group_limit(g, kind, window) | some g in budget_groups]
	count(limits) > 0
} else := l if {
	authenticated
	l := data.agora.config.budgets.authenticated[kind][window]
	valid_limit(l)
} else := null if {
	authenticated
} else := l if {
	l := data.agora.config.budgets.anonymous[kind][window]
	valid_limit(l)
} else := null

# The windows whose budget is spent, each with its reason: the caller's own
# budget, then its groups' totals.
spent[window] contains msg if {
	some window, use in input.usage.caller
	some kind in budget_kinds
	limit := budget_limit(kind, window)
	is_number(limit)
	used(use, kind) >= limit
	msg := sprintf("the budget of %v %s per %s is spent for this caller", [limit, kind, window])
}

spent[window] contains msg if {
	totals := data.agora.config.budgets.group_totals
	is_object(totals)
	some g in groups
	some window, use in input.usage.groups[g]
	some kind in budget_kinds
	limit := totals[g][kind][window]
	valid_limit(limit)
	used(use, kind) >= limit
	msg := sprintf("the budget of %v %s per %s is spent for the group %s", [limit, kind, window, shown(g)])
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
