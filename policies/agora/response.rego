# METADATA
# title: Agora response decision
# description: |
#   The document the gateway asks about what the model answers
#   (data.agora.response; docs/policy.md, "Response policy"): at each
#   checkpoint of a streamed answer, and once for a whole answer. Its input
#   is the request's input document plus `response` (text, texts,
#   tool_calls, finish_reason, final, usage). Same shape as data.agora.main,
#   and always defined:
#     allow    true only when no rule denies the answer
#     reasons  one sentence per deny, sorted; empty when allowed
#   The rules themselves live in package agora.answers
#   (policies/agora/answers/), their knobs in data.agora.config.
package agora.response

import data.agora.answers

default allow := false

allow := count(reasons) == 0

default reasons := []

reasons := sort(answers.deny)
