package agora.rules

# Which caller may use which model (data `models`, all entries globs):
#   anonymous      models anyone may use, anonymous callers included
#   authenticated  models any authenticated caller may use
#   groups         {pattern: [group, ...]}: models reserved to groups
# A model that matches no entry at all is refused to everybody.
#
# Each rule evaluated costs far more than an expression, so the entries are
# read in place (a list that is not an array, or groups that are not an
# object, offer nothing) rather than through one normalised view each.

# Every group that may use the model, over all the patterns it matches.
required_groups := {g |
	model_groups := data.agora.config.models.groups
	is_object(model_groups)
	some pattern, gs in model_groups
	glob.match(pattern, null, model)
	is_array(gs)
	some g in gs
	is_string(g)
}

# The first entry kind that offers the model (undefined: none does). An
# entry for anonymous callers lets everybody in, one for authenticated
# callers every authenticated caller, whatever groups also list the model;
# so the group patterns are matched only when neither list has the model.
model_offer := "anonymous" if {
	patterns := data.agora.config.models.anonymous
	is_array(patterns)
	some p in patterns
	is_string(p)
	glob.match(p, null, model)
} else := "authenticated" if {
	patterns := data.agora.config.models.authenticated
	is_array(patterns)
	some p in patterns
	is_string(p)
	glob.match(p, null, model)
} else := "groups" if {
	count(required_groups) > 0
}

model_allowed if model_offer == "anonymous"

model_allowed if {
	authenticated
	model_offer == "authenticated"
}

model_allowed if {
	authenticated
	model_offer == "groups"
	some g in groups
	g in required_groups
}

violation contains "request does not name a model" if {
	api in model_apis
	model == null
}

# Model rules apply to the model APIs, and to any other request naming a
# model; a request naming none is judged above.
violation contains msg if {
	is_string(model)
	not model_allowed
	msg := model_denial
}

model_denial := sprintf("model %s is not offered by this policy", [shown(model)]) if {
	not model_offer
} else := sprintf("model %s is limited to the groups %s; caller is in none of them", [shown(model), required_groups_text]) if {
	authenticated
} else := sprintf("model %s is limited to the groups %s; caller is anonymous", [shown(model), required_groups_text]) if {
	count(required_groups) > 0
} else := sprintf("model %s requires an authenticated caller; caller is anonymous", [shown(model)])

required_groups_text := sprintf("[%s]", [concat(", ", sort(required_groups))])
