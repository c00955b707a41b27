# METADATA
# title: Agora rules
# description: |
#   Normalised, never-undefined views of the input document and of the
#   configuration. Every rule file of package agora.rules reads the request
#   through these, so a missing or mistyped field gives a default, never a
#   runtime error or an undefined decision.
package agora.rules

# The whole input; {} when there is none or it is not an object.
default req := {}

req := input if is_object(input)

# data.agora.config (policies/agora/config/data.json); {} when absent.
default cfg := {}

cfg := data.agora.config if is_object(data.agora.config)

# object_at(o, key) is o[key] when that is an object, {} otherwise.
object_at(o, key) := v if {
	v := object.get(o, key, null)
	is_object(v)
} else := {}

# list_at(o, key) is o[key] when that is an array, [] otherwise.
list_at(o, key) := v if {
	v := object.get(o, key, null)
	is_array(v)
} else := []

# string_at(o, key, fallback) is o[key] when that is a string, fallback otherwise.
string_at(o, key, fallback) := v if {
	v := object.get(o, key, null)
	is_string(v)
} else := fallback

# matches_any(patterns, name): name matches one of the glob patterns.
# Globs have no delimiters: `*` matches any run of characters, `/` included.
matches_any(patterns, name) if {
	some p in patterns
	is_string(p)
	glob.match(p, null, name)
}

body := object_at(req, "body")

request := object_at(req, "request")

caller := object_at(req, "caller")

claims := object_at(caller, "claims")

# One of chat.completions, completions, embeddings, models, responses, other.
# Anything else (or nothing) is handled as "other".
api := string_at(req, "api", "other")

# The model the request names: input.model, else body.model, else null.
model := m if {
	m := string_at(req, "model", "")
	m != ""
} else := m if {
	m := string_at(body, "model", "")
	m != ""
} else := null

method := string_at(request, "method", "")

path := string_at(request, "path", "")

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

authenticated if object.get(caller, "authenticated", false) == true

# The caller's groups, from the JWT claim named by data `groups_claim`
# (default "groups"): a list of strings, or one string, or nothing.
groups_claim := string_at(cfg, "groups_claim", "groups")

default groups := set()

groups := {g | some g in claim; is_string(g)} if {
	authenticated
	claim := object.get(claims, groups_claim, null)
	is_array(claim)
}

groups := {claim} if {
	authenticated
	claim := object.get(claims, groups_claim, null)
	is_string(claim)
}

# Whether the caller asked for a streamed response.
default streaming := false

streaming if object.get(req, "stream", false) == true

streaming if object.get(body, "stream", false) == true

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
