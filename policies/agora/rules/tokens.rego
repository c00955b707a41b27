package agora.rules

# Output-token caps (data `max_tokens`; a null or absent cap means no cap):
#   anonymous      cap for anonymous callers
#   authenticated  cap for authenticated callers in no capped group
#   groups         {group: cap}: overrides the authenticated cap; a caller in
#                  several capped groups gets the highest (null wins: no cap)
tokens_cfg := object_at(cfg, "max_tokens")

group_caps := object_at(tokens_cfg, "groups")

# The request fields that ask for output tokens, across the APIs.
token_fields := ["max_tokens", "max_completion_tokens", "max_output_tokens"]

caller_group_caps := [c | some g in groups; c := group_caps[g]]

numeric_group_caps := [c | some c in caller_group_caps; is_number(c)]

anonymous_cap := c if {
	c := object.get(tokens_cfg, "anonymous", null)
	is_number(c)
} else := null

authenticated_cap := null if {
	some c in caller_group_caps
	c == null
} else := max(numeric_group_caps) if {
	count(numeric_group_caps) > 0
} else := c if {
	c := object.get(tokens_cfg, "authenticated", null)
	is_number(c)
} else := null

# The cap for this caller (reported as the decision's max_tokens).
token_cap := authenticated_cap if authenticated

token_cap := anonymous_cap if not authenticated

violation contains msg if {
	some field in token_fields
	v := object.get(body, field, null)
	v != null
	not is_number(v)
	msg := sprintf("%s must be a number", [field])
}

violation contains msg if {
	is_number(token_cap)
	some field in token_fields
	v := object.get(body, field, null)
	is_number(v)
	v > token_cap
	msg := sprintf("%s %v exceeds the cap of %v tokens for this caller", [field, v, token_cap])
}
