"""Obligations of a decision, applied to what is forwarded, or the request is refused.

A decision's ``max_tokens`` caps the whole answer: the gateway sets or lowers the
output-cap field of the API (``max_tokens`` / ``max_completion_tokens`` for chat
and completions, ``max_output_tokens`` for responses), and when several answers
are asked for it divides the cap among them: choices (``n``, ``best_of``), times
the prompts of a completions batch (``"prompt": ["a", "b"]`` is answered once
per prompt), so that answers times the per-answer cap never exceeds it. A
request that asks for more answers than the cap has tokens is refused.

The body is rewritten only when an obligation changes it; otherwise the bytes
forwarded are the bytes received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.exceptions import ObligationRefused

_CAP_FIELDS = {
    "chat.completions": ("max_tokens", "max_completion_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
_CHOICE_FIELDS = ("n", "best_of")


@dataclass(frozen=True)
class Forwarded:
    """The body to forward and the obligations applied to it (for the decision log)."""

    body: bytes
    applied: dict[str, int] = field(default_factory=dict)


def apply_obligations(
    api: str, body: dict[str, Any] | None, raw: bytes, max_tokens: int | None, chat_cap_field: str
) -> Forwarded:
    """Apply the output cap to ``body``; raise ObligationRefused when it cannot be met."""
    fields = _CAP_FIELDS.get(api)
    if max_tokens is None or fields is None or body is None:
        return Forwarded(raw)
    answers = _answers(api, body)
    per_choice = max_tokens // answers
    if per_choice < 1:
        raise ObligationRefused(
            f"{answers} answers cannot share the output cap of {max_tokens} tokens"
        )
    present = [name for name in fields if name in body]
    if not present:
        present = [chat_cap_field if api == "chat.completions" else fields[0]]
    changed = dict(body)
    for name in present:
        changed[name] = min(int(body.get(name) or per_choice), per_choice)
    applied = {"max_tokens": per_choice}
    if changed == body:
        return Forwarded(raw, applied)
    encoded = json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()
    return Forwarded(encoded, applied)


def _answers(api: str, body: dict[str, Any]) -> int:
    """How many answers the upstream generates, each up to the per-answer cap.

    A completions prompt is one text, one list of token ids, or a batch: a list
    of texts or of token-id lists, each answered ``n`` times.
    """
    choices = max(int(body.get(name) or 1) for name in _CHOICE_FIELDS)
    prompt = body.get("prompt")
    token_ids = isinstance(prompt, list) and all(isinstance(p, int) for p in prompt)
    if api == "completions" and isinstance(prompt, list) and prompt and not token_ids:
        return choices * len(prompt)
    return choices
