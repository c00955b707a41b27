package agora.rules

# Which caller may use which model (data `models`, all entries globs):
#   anonymous      models anyone may use, anonymous callers included
#   authenticated  models any authenticated caller may use
#   groups         {pattern: [group, ...]}: models reserved to groups
# A model that matches no entry at all is refused to everybody.
anonymous_models := m if {
	m := data.agora.config.models.anonymous
	is_array(m)
} else := []

authenticated_models := m if {
	m := data.agora.config.models.authenticated
	is_array(m)
} else := []

model_groups := m if {
	m := data.agora.config.models.groups
	is_object(m)
} else := {}

# Model rules apply to the model APIs, and to any other request naming a model.
default model_judged := false

model_judged if api in model_apis

model_judged if is_string(model)

# Every group that may use the model, over all the patterns it matches.
required_groups := {g |
	some pattern, gs in model_groups
	glob.match(pattern, null, model)
	is_array(gs)
	some g in gs
	is_string(g)
}

model_listed if matches_any(anonymous_models, model)

model_listed if matches_any(authenticated_models, model)

model_listed if count(required_groups) > 0

model_allowed if matches_any(anonymous_models, model)

model_allowed if {
	authenticated
	matches_any(authenticated_models, model)
}

model_allowed if {
	authenticated
	some g in groups
	g in required_groups
}

required_groups_text := sprintf("[%s]", [concat(", ", sort(required_groups))])

violation contains "request does not name a model" if {
	api in model_apis
	model == null
}

violation contains msg if {
	model_judged
	is_string(model)
	not model_listed
	msg := sprintf("model %s is not offered by this policy", [shown(model)])
}

violation contains msg if {
	model_judged
	is_string(model)
	model_listed
	not model_allowed
	msg := model_denial
}

model_denial := sprintf("model %s is limited to the groups %s; caller is in none of them", [shown(model), required_groups_text]) if {
	authenticated
} else := sprintf("model %s is limited to the groups %s; caller is anonymous", [shown(model), required_groups_text]) if {
	count(required_groups) > 0
} else := sprintf("model %s requires an authenticated caller; caller is anonymous", [shown(model)])
