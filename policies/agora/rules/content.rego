package agora.rules

# Deny rules on the text the caller sends (data `deny_patterns`, a list of
# {"id", "description", "pattern"}; patterns are RE2 regular expressions,
# made case-insensitive with a leading (?i)). A reason names the rule, never
# the text that matched.
deny_rules := list_at(cfg, "deny_patterns")

# Body fields that carry caller text, whatever the API:
#   messages      chat.completions: content is a string or a list of parts with text
#   prompt        completions: a string or a list of strings
#   input         embeddings (string or list of strings), responses (string or a
#                 list of items whose content is a string or a list of parts)
#   instructions  responses: the system instructions
text_fields := ["messages", "prompt", "input", "instructions"]

text_items contains item if {
	some field in text_fields
	some item in list_at(body, field)
}

texts contains t if {
	some field in text_fields
	t := object.get(body, field, null)
	is_string(t)
}

texts contains t if {
	some t in text_items
	is_string(t)
}

texts contains t if {
	some item in text_items
	is_object(item)
	some key in ["content", "text", "output"]
	t := object.get(item, key, null)
	is_string(t)
}

texts contains t if {
	some item in text_items
	is_object(item)
	some t in list_at(item, "content")
	is_string(t)
}

texts contains t if {
	some item in text_items
	is_object(item)
	some part in list_at(item, "content")
	is_object(part)
	t := object.get(part, "text", null)
	is_string(t)
}

valid_deny_rule(rule) if {
	is_object(rule)
	string_at(rule, "id", "") != ""
	regex.is_valid(string_at(rule, "pattern", "("))
}

deny_rule_label(rule) := sprintf("%s: %s", [rule.id, d]) if {
	d := string_at(rule, "description", "")
	d != ""
} else := rule.id

violation contains msg if {
	some rule in deny_rules
	valid_deny_rule(rule)
	some t in texts
	regex.match(rule.pattern, t)
	msg := sprintf("request matches deny rule %s", [deny_rule_label(rule)])
}

# A malformed rule fails closed: every request is refused until it is fixed.
violation contains msg if {
	some i, rule in deny_rules
	not valid_deny_rule(rule)
	msg := sprintf("deny_patterns[%d] is not a valid rule (it needs an id and a valid pattern); the policy refuses requests until it is fixed", [i])
}
