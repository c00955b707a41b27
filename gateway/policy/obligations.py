"""Obligations of a decision, applied to what is forwarded, or the request is refused.

A decision's ``max_tokens`` caps the whole answer: the gateway sets or lowers the
output-cap field of the API (``max_tokens`` / ``max_completion_tokens`` for chat
and completions, ``max_output_tokens`` for responses), and when several answers
are asked for it divides the cap among them: choices (``n``, ``best_of``), times
the prompts of a completions batch (``"prompt": ["a", "b"]`` is answered once
per prompt), so that answers times the per-answer cap never exceeds it. A
request that asks for more answers than the cap has tokens is refused.

A stream of chat or completions that does not ask for its usage is made to
(``stream_options.include_usage``), so that its tokens are counted against the
caller's budgets; the relay keeps that extra chunk from the caller.

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
_STREAM_USAGE_APIS = frozenset({"chat.completions", "completions"})


@dataclass(frozen=True)
class Forwarded:
    """The body to forward and the obligations applied to it (for the decision log)."""

    body: bytes
    applied: dict[str, int] = field(default_factory=dict)
    usage_requested: bool = False
    """The gateway added ``stream_options.include_usage``: the usage chunk is its own."""


def apply_obligations(
    api: str,
    body: dict[str, Any] | None,
    raw: bytes,
    max_tokens: int | None,
    chat_cap_field: str,
    *,
    stream_usage: bool = False,
) -> Forwarded:
    """Apply the output cap to ``body``; raise ObligationRefused when it cannot be met.

    With ``stream_usage``, a chat or completions stream that does not ask for its
    usage is made to (``stream_options.include_usage``), so that its tokens can
    be counted; the relay then keeps that chunk from the caller.
    """
    if body is None:
        return Forwarded(raw)
    changed = dict(body)
    applied: dict[str, int] = {}
    fields = _CAP_FIELDS.get(api)
    if max_tokens is not None and fields is not None:
        answers = _answers(api, body)
        per_choice = max_tokens // answers
        if per_choice < 1:
            raise ObligationRefused(
                f"{answers} answers cannot share the output cap of {max_tokens} tokens"
            )
        present = [name for name in fields if name in body]
        if not present:
            present = [chat_cap_field if api == "chat.completions" else fields[0]]
        for name in present:
            changed[name] = min(int(body.get(name) or per_choice), per_choice)
        applied = {"max_tokens": per_choice}
    usage_requested = stream_usage and _ask_for_stream_usage(api, changed)
    if changed == body:
        return Forwarded(raw, applied)
    encoded = json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()
    return Forwarded(encoded, applied, usage_requested)


def _ask_for_stream_usage(api: str, body: dict[str, Any]) -> bool:
    """Set ``stream_options.include_usage`` on a stream that lacks it; whether it was set."""
    if api not in _STREAM_USAGE_APIS or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return False  # the upstream refuses it; nothing to count
    if options is not None and options.get("include_usage") is True:
        return False
    body["stream_options"] = {**(options or {}), "include_usage": True}
    return True


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
