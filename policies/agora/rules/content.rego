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
	rules := data.agora.config.deny_patterns
	is_array(rules)
} else := []

# Whitespace as Python's str.isspace() sees it (RE2's \s is ASCII only).
unicode_space_runs := `[\s\x0b\x1c-\x1f\x85\p{Z}]+`

default texts_given := false

texts_given if is_array(input.texts)

default given_texts := set()

given_texts := {t | some t in input.texts; is_string(t)} if texts_given

raw_texts := {s | walk(input.body, [_, s]); is_string(s)} | {key |
	walk(input.body, [_, node])
	is_object(node)
	some key, _ in node
	is_string(key)
}

raw_normalised_texts := {t |
	some s in raw_texts
	t := trim_space(regex.replace(regex.replace(s, `\p{Cf}+`, ""), unicode_space_runs, " "))
}

scanned_texts := given_texts | raw_texts if texts_given

scanned_texts := raw_texts | raw_normalised_texts if not texts_given

# Scanning every text with every rule is exact, but each regex.match costs a
# built-in call whatever the length of its text. A match within a string is
# a match within any longer text that holds the string between line feeds,
# unless the pattern looks outside the match: RE2 has no lookaround, so only
# the anchors ^ $ \A \z can (a line feed is no word character, so \b and \B
# see it as they see a text edge). So a rule without anchors is matched
# against each given text and once against the other strings joined by line
# feeds; only when that join matches are its strings matched one by one, so
# that a reason always names a rule that one single string matches. A rule
# with anchors (or what looks like one) is matched against each text.
batched_texts := raw_texts if texts_given

batched_texts := scanned_texts if not texts_given

batched_join := concat("\n", batched_texts)

anchored(pattern) if regex.match(`[$^]|\\[Az]`, pattern)

deny_rule_matches(pattern) if {
	anchored(pattern)
	some t in scanned_texts
	regex.match(pattern, t)
}

deny_rule_matches(pattern) if {
	not anchored(pattern)
	some t in given_texts
	regex.match(pattern, t)
}

deny_rule_matches(pattern) if {
	not anchored(pattern)
	regex.match(pattern, batched_join)
	some t in batched_texts
	regex.match(pattern, t)
}

# A valid rule has a non-empty string id and a pattern that compiles.
# regex.match on an invalid pattern is a built-in error, which OPA evaluates
# as undefined (and, under strict-builtin-errors, as a query error: a deny
# either way). Unlike
# regex.is_valid, which compiles its argument on every call, regex.match
# reuses OPA's cache of compiled patterns.
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

# One reason per rule that one single text matches (deny_rule_matches).
# Measured on a typical chat request, one alternation of all the patterns
# per text was slower: Go's regexp leaves its backtracker for its slower NFA
# on larger programs, which eats the saving.
violation contains msg if {
	some rule in valid_deny_rules
	deny_rule_matches(rule.pattern)
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

token_prompts_allowed if data.agora.config.token_prompts.allowed == true

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
	holds_token_ids(input.body[field])
	msg := sprintf("%s is given as token ids, which the policy cannot judge; send it as text", [field])
}
