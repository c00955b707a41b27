package agora.rules

# Streaming is allowed; data streaming.anonymous = false refuses it to
# anonymous callers.
violation contains "streaming is not available to anonymous callers" if {
	streaming
	not authenticated
	data.agora.config.streaming.anonymous == false
}
