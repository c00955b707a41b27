# METADATA
# title: Agora answer rules
# description: |
#   The rules response policy (data.agora.response) applies to what the
#   model answers; the decision document itself is in policies/agora/response.rego.
package agora.answers

# Deny terms (data `answer_deny_terms`, a list of {"id", "description",
# "term"}): an answer whose text or tool-call arguments contain a term, in
# any letter case, is denied. Terms are matched against the texts as the
# gateway normalises them (input.response.texts: NFKC, format characters
# removed, whitespace runs as one space, trimmed), the same normalisation as
# the request's input.texts, so a term is written in that form (single
# spaces). Without input.response.texts (opa eval on a hand-written input),
# the raw text and arguments are scanned. A reason names the term's id,
# never the text.
deny_terms := terms if {
	terms := data.agora.config.answer_deny_terms
	is_array(terms)
} else := []

default texts_given := false

texts_given if is_array(input.response.texts)

scanned contains t if {
	texts_given
	some t in input.response.texts
	is_string(t)
}

scanned contains t if {
	not texts_given
	t := input.response.text
	is_string(t)
}

scanned contains t if {
	not texts_given
	some call in input.response.tool_calls
	t := call.function.arguments
	is_string(t)
}

valid_terms := [rule |
	some rule in deny_terms
	is_string(rule.id)
	rule.id != ""
	is_string(rule.term)
	rule.term != ""
]

label(rule) := sprintf("%s: %s", [rule.id, d]) if {
	d := rule.description
	is_string(d)
	d != ""
} else := rule.id

deny contains msg if {
	some rule in valid_terms
	term := lower(rule.term)
	some t in scanned
	contains(lower(t), term)
	msg := sprintf("answer matches deny term %s", [label(rule)])
}

# A malformed term fails closed: every answer is stopped until it is fixed.
deny contains msg if {
	some i, rule in deny_terms
	not rule in valid_terms
	msg := sprintf("answer_deny_terms[%d] is not a valid term (it needs an id and a non-empty term); the policy stops answers until it is fixed", [i])
}
