# Response policy (data.agora.response): deny terms in what the model answers.
package agora.tests.response_test

import data.agora.response
import data.agora.tests.fixtures as f

key_reason := "answer matches deny term private-key: a private key block in the answer"

# The request's input document plus `response`, as the gateway sends it
# (without `texts` unless given: only the gateway normalises with NFKC).
answer(text, calls, final) := object.union(
	f.chat(f.anonymous, "demo-small", "Hello"),
	{"response": {"text": text, "tool_calls": calls, "finish_reason": null, "final": final, "usage": null}},
)

with_answer_texts(d, texts) := json.patch(d, [{"op": "add", "path": "/response/texts", "value": texts}])

call(args) := {"id": "call_1", "type": "function", "function": {"name": "save", "arguments": args}}

test_clean_answer_is_allowed if {
	d := response with input as answer("Here is a poem about the sea.", [], false)
	d == {"allow": true, "reasons": []}
}

test_final_clean_answer_is_allowed if {
	response.allow with input as answer("Done.", [], true)
}

test_private_key_in_text_is_denied if {
	text := "Sure: -----BEGIN PRIVATE KEY----- MIIEvQIBADANBgkqhkiG9w0B"
	d := response with input as answer(text, [], false)
	d == {"allow": false, "reasons": [key_reason]}
}

test_any_letter_case_is_denied if {
	response.reasons == [key_reason] with input as answer("-----begin private key-----", [], true)
}

test_private_key_in_tool_call_arguments_is_denied if {
	args := "{\"file\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbn\"}"
	reasons := response.reasons with input as answer("", [call(args)], false)
	reasons == ["answer matches deny term openssh-private-key: an OpenSSH private key block in the answer"]
}

test_normalised_texts_are_what_is_scanned if {
	# The raw text hides the term behind a zero-width space; the gateway's
	# normalised texts (format characters removed) reveal it.
	raw := answer("-----BEGIN PRIVATE\u200b KEY-----", [], false)
	response.allow with input as raw
	given := with_answer_texts(raw, ["-----BEGIN PRIVATE KEY-----"])
	response.reasons == [key_reason] with input as given
}

test_every_kind_of_pem_private_key_block_is_denied if {
	every header in [
		"-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----",
		"-----BEGIN EC PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----",
		"-----BEGIN ENCRYPTED PRIVATE KEY-----", "-----BEGIN DSA PRIVATE KEY-----",
		"-----BEGIN PGP PRIVATE KEY BLOCK-----",
	] {
		d := response with input as answer(sprintf("here: %s abc", [lower(header)]), [], false)
		not d.allow
		count(d.reasons) == 1
	}
}

test_reason_never_echoes_the_answer if {
	secret := "-----BEGIN RSA PRIVATE KEY----- MIIEowIBAAKCAQEA"
	d := response with input as answer(secret, [], false)
	not d.allow
	every r in d.reasons {
		not contains(r, "MIIEow")
	}
}

test_malformed_term_fails_closed if {
	config := f.config_set("/answer_deny_terms/-", {"id": "", "term": "x"})
	d := response with input as answer("clean", [], false) with data.agora.config as config
	not d.allow
	appended := count(data.agora.config.answer_deny_terms)
	d.reasons == [sprintf("answer_deny_terms[%d] is not a valid term (it needs an id and a non-empty term); the policy stops answers until it is fixed", [appended])]
}

test_no_terms_configured_allows_everything if {
	config := json.patch(data.agora.config, [{"op": "remove", "path": "/answer_deny_terms"}])
	response.allow with input as answer("-----BEGIN PRIVATE KEY-----", [], true) with data.agora.config as config
}

test_missing_response_is_allowed_and_defined if {
	d := response with input as f.chat(f.anonymous, "demo-small", "Hello")
	d == {"allow": true, "reasons": []}
}
