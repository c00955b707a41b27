# Builders of input documents for the tests, shaped as the gateway sends them
# (see docs/policy.md), except `texts`: only the gateway can normalise the
# strings (NFKC), so doc() leaves it out, as a hand-written input would, and
# tests of what the gateway adds set it with with_texts().
package agora.tests.fixtures

anonymous := {"authenticated": false, "sub": null, "iss": null, "claims": {}}

user(groups) := {
	"authenticated": true,
	"sub": "alice",
	"iss": "https://issuer.example",
	"claims": {"sub": "alice", "iss": "https://issuer.example", "aud": "agora", "groups": groups},
}

user_without_groups := {
	"authenticated": true,
	"sub": "bob",
	"iss": "https://issuer.example",
	"claims": {"sub": "bob", "iss": "https://issuer.example", "aud": "agora"},
}

doc(api, method, path, caller, body) := {
	"api": api,
	"model": object.get(body, "model", null),
	"stream": object.get(body, "stream", false),
	"body": body,
	"request": {
		"method": method,
		"path": path,
		"query": {},
		"headers": {"content-type": "application/json", "user-agent": "opa-test"},
	},
	"caller": caller,
	"upstream": "local",
	"policy": {"version": 7, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"},
	"time": "2025-01-01T00:00:00Z",
}

chat_body(model, content) := {"model": model, "messages": [
	{"role": "system", "content": "You are a helpful assistant."},
	{"role": "user", "content": content},
]}

chat(caller, model, content) := doc("chat.completions", "POST", "/v1/chat/completions", caller, chat_body(model, content))

# A chat request with extra body fields (max_tokens, stream, ...).
chat_with(caller, model, content, extra) := doc(
	"chat.completions", "POST", "/v1/chat/completions", caller,
	object.union(chat_body(model, content), extra),
)

completion(caller, model, prompt) := doc("completions", "POST", "/v1/completions", caller, {"model": model, "prompt": prompt})

embedding(caller, model, text) := doc("embeddings", "POST", "/v1/embeddings", caller, {"model": model, "input": text})

response(caller, model, items) := doc("responses", "POST", "/v1/responses", caller, {"model": model, "input": items})

models_list(caller) := doc("models", "GET", "/v1/models", caller, {})

# d with input.texts, the normalised strings the gateway adds.
with_texts(d, texts) := object.union(d, {"texts": texts})

# d with body.<field> set (JSON pointer p under /body).
body_set(d, p, v) := json.patch(d, [{"op": "add", "path": concat("", ["/body", p]), "value": v}])

# The shipped configuration with one knob changed (JSON pointer p), to use as
# `with data.agora.config as f.config_set(p, v)`. Replace data.agora.config
# as a whole: `with data.agora.config.x as v` would be merged into the
# shipped document as the rules read it, not replace it.
config_set(p, v) := json.patch(data.agora.config, [{"op": "add", "path": p, "value": v}])

# What the gateway counted for one window (input.usage.caller[window]).
use(requests, tokens) := {"requests": requests, "tokens": {"prompt": tokens, "completion": 0, "total": tokens}, "estimated": 0}

# d with input.usage: the caller's use per window, its groups' use, and the windows.
with_usage(d, caller_use, group_use) := object.union(d, {"usage": {
	"windows": {"minute": {"seconds": 60, "resets_in_s": 17}, "day": {"seconds": 86400, "resets_in_s": 3600}},
	"caller": caller_use,
	"groups": group_use,
	"counters": "local",
}})
