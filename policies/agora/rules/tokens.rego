package agora.rules

# Output-token caps (data `max_tokens`; a null or absent cap means no cap):
#   anonymous      cap for anonymous callers
#   authenticated  cap for authenticated callers in no capped group
#   groups         {group: cap}: overrides the authenticated cap; a caller in
#                  several capped groups gets the highest (null wins: no cap)

# The request fields that ask for output tokens, across the APIs.
token_fields := ["max_tokens", "max_completion_tokens", "max_output_tokens"]

# The cap for this caller, reported as the decision's max_tokens: an
# obligation the gateway enforces on the body it forwards (it sets or lowers
# the output-token field), so a request that asks for no limit still gets
# this one. An explicit field above the cap is denied, not lowered.
# One else chain, with the group caps read in place (caps that are not an
# object cap nobody): each rule evaluated costs far more than an expression.
# Only authenticated callers have groups (request.rego), so the group steps
# never apply to anonymous callers.
token_cap := null if {
	some g in groups
	data.agora.config.max_tokens.groups[g] == null
} else := max(caps) if {
	caps := [c | some g in groups; c := data.agora.config.max_tokens.groups[g]; is_number(c)]
	count(caps) > 0
} else := c if {
	authenticated
	c := data.agora.config.max_tokens.authenticated
	is_number(c)
} else := null if {
	authenticated
} else := c if {
	c := data.agora.config.max_tokens.anonymous
	is_number(c)
} else := null

# A positive integer: 1, 2, ... (1.0 counts; 0, -1, 1.5, "100" and true do not).
positive_integer(v) if {
	is_number(v)
	v >= 1
	floor(v) == v
}

# A token field that is present (null counts as absent) must be a positive
# integer, and at most the caller's cap.
violation contains msg if {
	some field in token_fields
	v := input.body[field]
	v != null
	not positive_integer(v)
	msg := sprintf("%s must be a positive integer", [field])
}

violation contains msg if {
	is_number(token_cap)
	some field in token_fields
	v := input.body[field]
	positive_integer(v)
	v > token_cap
	msg := sprintf("%s %v exceeds the cap of %v tokens for this caller", [field, v, token_cap])
}

# Choices (data `max_choices`; null or absent means no cap). The token cap
# bounds each choice, so the number of choices bounds the total: `n`
# (chat.completions, completions) and `best_of` (completions: candidates
# generated server-side) must be positive integers, at most max_choices.
choice_fields := ["n", "best_of"]

default max_choices := null

max_choices := data.agora.config.max_choices

violation contains msg if {
	some field in choice_fields
	v := input.body[field]
	v != null
	not positive_integer(v)
	msg := sprintf("%s must be a positive integer", [field])
}

violation contains msg if {
	positive_integer(max_choices)
	some field in choice_fields
	v := input.body[field]
	positive_integer(v)
	v > max_choices
	msg := sprintf("%s %v exceeds the cap of %v choices", [field, v, max_choices])
}

# A malformed cap fails closed: every request is refused until it is fixed.
violation contains "max_choices is not a positive integer or null; the policy refuses requests until it is fixed" if {
	max_choices != null
	not positive_integer(max_choices)
}
