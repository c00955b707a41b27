package agora.rules

# Requests that are not one of the known model APIs nor a read of the models
# API (api "other", any unknown value, or "models" with a method other than
# GET) are refused unless their path matches a glob in
# data other_endpoints.allowed_paths (default: none).
allowed_other_paths := list_at(object_at(cfg, "other_endpoints"), "allowed_paths")

violation contains msg if {
	not api in model_apis
	not models_read
	not matches_any(allowed_other_paths, path)
	msg := sprintf("endpoint %s is not allowed by the policy", [endpoint])
}
