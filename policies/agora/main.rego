# METADATA
# title: Agora decision
# description: |
#   The document the gateway asks for (data.agora.main). It holds these
#   three fields and is always defined, whatever the input:
#     allow       true only when no rule denies the request
#     reasons     one sentence per deny, sorted; empty when allowed
#     max_tokens  the output-token cap that applies to this caller (null: none)
#   and, only when the sole reasons to deny are spent usage budgets:
#     status         429
#     retry_after_s  seconds until the spent budgets reset
#   The rules themselves live in package agora.rules (policies/agora/rules/),
#   and every knob in data.agora.config (policies/agora/config/data.json).
package agora.main

import data.agora.rules

default allow := false

allow := count(reasons) == 0

default reasons := []

reasons := sort(rules.deny)

default max_tokens := null

max_tokens := rules.token_cap

status := 429 if rules.budget_only

retry_after_s := rules.retry_after_s if rules.budget_only
