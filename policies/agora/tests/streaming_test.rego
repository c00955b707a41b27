# Streaming is allowed, unless data forbids it to anonymous callers.
package agora.tests.streaming_test

import data.agora.main
import data.agora.tests.fixtures as f

test_streaming_allowed_by_default if {
	main.allow with input as f.chat_with(f.anonymous, "demo-small", "hi", {"stream": true})
	main.allow with input as f.chat_with(f.user(["members"]), "demo-large", "hi", {"stream": true})
}

test_streaming_can_be_refused_to_anonymous_callers if {
	inp := f.chat_with(f.anonymous, "demo-small", "hi", {"stream": true})
	d := main with input as inp with data.agora.config as f.config_set("/streaming/anonymous", false)
	d == {"allow": false, "reasons": ["streaming is not available to anonymous callers"], "max_tokens": 256}
	main.allow with input as f.chat_with(f.user_without_groups, "demo-small", "hi", {"stream": true})
		with data.agora.config as f.config_set("/streaming/anonymous", false)
	main.allow with input as f.chat(f.anonymous, "demo-small", "hi")
		with data.agora.config as f.config_set("/streaming/anonymous", false)
}

test_stream_flag_read_from_input_or_body if {
	top := object.union(f.chat(f.anonymous, "demo-small", "hi"), {"stream": true})
	not main.allow with input as top with data.agora.config as f.config_set("/streaming/anonymous", false)
	in_body := json.patch(f.chat(f.anonymous, "demo-small", "hi"), [{"op": "add", "path": "/body/stream", "value": true}])
	not main.allow with input as in_body with data.agora.config as f.config_set("/streaming/anonymous", false)
}
