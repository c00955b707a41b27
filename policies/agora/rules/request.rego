# METADATA
# title: Agora rules
# description: |
#   Normalised, never-undefined views of the input document and of the
#   configuration. Every rule file of package agora.rules reads the request
#   through these, so a missing or mistyped field gives a default, never a
#   runtime error or an undefined decision.
package agora.rules

# The views read the input and the configuration through references to the
# fields they need (input.body, data.agora.config.models, ...), never through
# a whole document: a reference costs only the field it reaches, while handing
# `input` or `data.agora.config` to a built-in converts all of it on every
# decision. A reference into a JSON value that is not an object (or into a
# missing field) is undefined, which gives the view its default.

# matches_any(patterns, name): name matches one of the glob patterns.
# Globs have no delimiters: `*` matches any run of characters, `/` included.
matches_any(patterns, name) if {
	some p in patterns
	is_string(p)
	glob.match(p, null, name)
}

# One of chat.completions, completions, embeddings, models, responses, other.
# Anything else (or nothing) is handled as "other".
api := a if {
	a := input.api
	is_string(a)
} else := "other"

# The model the request names: input.model, else body.model, else null.
model := m if {
	m := input.model
	is_string(m)
	m != ""
} else := m if {
	m := input.body.model
	is_string(m)
	m != ""
} else := null

method := m if {
	m := input.request.method
	is_string(m)
} else := ""

path := p if {
	p := input.request.path
	is_string(p)
} else := ""

endpoint := e if {
	e := trim_space(concat(" ", [method, shown(path)]))
	e != ""
} else := "(unknown endpoint)"

# shown(s): s cut to 80 characters, for caller-chosen strings quoted in reasons.
shown(s) := sprintf("%s...", [substring(s, 0, 80)]) if {
	count(s) > 80
} else := s

# Only `caller.authenticated == true` counts; anything else is anonymous.
default authenticated := false

authenticated if input.caller.authenticated == true

# The caller's groups, from the JWT claim named by data `groups_claim`
# (default "groups"): a list of strings, or one string, or nothing.
groups_claim := c if {
	c := data.agora.config.groups_claim
	is_string(c)
} else := "groups"

default groups := set()

groups := {g | some g in claim; is_string(g)} if {
	authenticated
	claim := input.caller.claims[groups_claim]
	is_array(claim)
} else := {claim} if {
	authenticated
	claim := input.caller.claims[groups_claim]
	is_string(claim)
}

# Whether the caller asked for a streamed response.
default streaming := false

streaming if input.stream == true

streaming if input.body.stream == true

# The APIs that act on a model and are judged by every rule.
model_apis := {"chat.completions", "completions", "embeddings", "responses"}

# Listing or retrieving models (GET /v1/models, GET /v1/models/{id}) is open
# to all and judged by no other rule. The gateway names any other method on
# /v1/models... api "other"; an api "models" with another method is not
# exempt either.
default models_read := false

models_read if {
	api == "models"
	method == "GET"
}

# The deny set, one reason per violated rule.
deny contains msg if {
	not models_read
	some msg in violation
}
