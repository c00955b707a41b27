package agora.rules

# Deny rules on the text the model reads (data `deny_patterns`, a list of
# {"id", "description", "pattern"}; patterns are RE2 regular expressions,
# made case-insensitive with a leading (?i)). A reason names the rule, never
# the text that matched.
#
# Every string the model reads is scanned, whatever the API and wherever it
# sits in the body:
#   input.texts  every string value at any depth of the body and every object
#                key, normalised by the gateway (Unicode NFKC, format
#                characters of category Cf removed, each run of whitespace
#                collapsed to one space, trimmed). Rego has no NFKC: fullwidth
#                letters and other compatibility forms are caught here only.
#   the body     the same strings and keys as sent, found with walk(), so that
#                the policy still scans everything when it is evaluated
#                without input.texts (opa eval on a hand-written input). Only
#                in that case is each raw string also scanned after the two
#                steps of the normalisation a regular expression does cheaply
#                and exactly: Cf characters removed, runs of Unicode
#                whitespace collapsed to one space.
deny_rules := rules if {
	rules := cfg.deny_patterns
	is_array(rules)
} else := []

# Whitespace as Python's str.isspace() sees it (RE2's \s is ASCII only).
unicode_space_runs := `[\s\x0b\x1c-\x1f\x85\p{Z}]+`

given_texts := {t | some t in list_at(req, "texts"); is_string(t)}

raw_body := object.get(req, "body", null)

raw_texts := {s | walk(raw_body, [_, s]); is_string(s)} | {key |
	walk(raw_body, [_, node])
	is_object(node)
	some key, _ in node
	is_string(key)
}

default texts_given := false

texts_given if is_array(object.get(req, "texts", null))

scanned_texts := given_texts | raw_texts if texts_given

scanned_texts := raw_texts | {t |
	some s in raw_texts
	t := trim_space(regex.replace(regex.replace(s, `\p{Cf}+`, ""), unicode_space_runs, " "))
} if not texts_given

# A valid rule has a non-empty string id and a pattern that compiles.
# regex.match on an invalid pattern is a built-in error, which OPA evaluates
# as undefined (and, under strict-builtin-errors, as a query error: a deny
# either way). Unlike regex.is_valid, which compiles its argument on every
# call, regex.match reuses OPA's cache of compiled patterns.
valid_deny_rules := [rule |
	some rule in deny_rules
	is_string(rule.id)
	rule.id != ""
	is_string(rule.pattern)
	is_boolean(regex.match(rule.pattern, ""))
]

deny_rule_label(rule) := sprintf("%s: %s", [rule.id, d]) if {
	d := rule.description
	is_string(d)
	d != ""
} else := rule.id

# Each rule is matched against each text, so that a reason always names a
# rule that one single text matches. Measured on a typical chat request,
# neither one alternation of all the patterns per text nor a first pass over
# all the texts joined was faster: Go's regexp leaves its backtracker for its
# slower NFA on larger programs and longer inputs, which eats the saving.
violation contains msg if {
	some rule in valid_deny_rules
	some t in scanned_texts
	regex.match(rule.pattern, t)
	msg := sprintf("request matches deny rule %s", [deny_rule_label(rule)])
}

# A malformed rule fails closed: every request is refused until it is fixed.
violation contains msg if {
	some i, rule in deny_rules
	not rule in valid_deny_rules
	msg := sprintf("deny_patterns[%d] is not a valid rule (it needs an id and a valid pattern); the policy refuses requests until it is fixed", [i])
}

# Token ids (`prompt` of completions, `input` of embeddings: an array of
# integers, or an array of such arrays) cannot be read by the deny rules, so
# they are refused unless data token_prompts.allowed is true.
default token_prompts_allowed := false

token_prompts_allowed if cfg.token_prompts.allowed == true

token_prompt_fields := ["prompt", "input"]

holds_token_ids(v) if is_number(v)

holds_token_ids(v) if {
	is_array(v)
	some x in v
	is_number(x)
}

holds_token_ids(v) if {
	is_array(v)
	some x in v
	is_array(x)
	some y in x
	is_number(y)
}

violation contains msg if {
	not token_prompts_allowed
	some field in token_prompt_fields
	holds_token_ids(object.get(body, field, null))
	msg := sprintf("%s is given as token ids, which the policy cannot judge; send it as text", [field])
}
