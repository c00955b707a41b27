package agora.rules

# Requests that are not one of the known model APIs nor a read of the models
# API (api "other", any unknown value, or "models" with a method other than
# GET) are refused unless their path matches a glob in
# data other_endpoints.allowed_paths (default: none).
allowed_other_paths := p if {
	p := data.agora.config.other_endpoints.allowed_paths
	is_array(p)
} else := []

violation contains msg if {
	not api in model_apis
	not models_read
	not matches_any(allowed_other_paths, path)
	msg := sprintf("endpoint %s is not allowed by the policy", [endpoint])
}
