""" "What would the policy say": a pasted request judged by the version in force and a proposal.

The question becomes the policy input the request path would build (the same
body parser, the same input document) and goes to the shadow pool's OPAs,
never to the enforcing OPA: nothing is forwarded and nothing is written to the
decision log. The form is public, so questions are bounded in size
(``community.dry_run.max_bytes``) and in rate (``per_minute``, for every
visitor together: a token bucket).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gateway.auth import Caller
from gateway.exceptions import InvalidBody
from gateway.pinning.store import PolicyVersion
from gateway.policy.input import RequestFacts, build_input
from gateway.request.body import parse_json_body

MAX_DEPTH = 16
DRY_RUN_SUB = "dry-run"
"""The ``sub`` of the caller of a question asked with claims (an authenticated caller)."""


class InvalidQuestion(ValueError):
    """The question cannot be judged; the message says why."""


@dataclass(frozen=True)
class Question:
    model: str
    messages: list[dict[str, Any]]
    claims: dict[str, Any] | None
    """None: an anonymous caller; an object (possibly empty): an authenticated one."""
    proposal: str | None


def question_from_form(form: dict[str, str]) -> Question:
    """A question from the page's form: model, one message, claims as JSON, a proposal id."""
    model = form.get("model", "").strip()
    message = form.get("message", "")
    claims_text = form.get("claims", "").strip()
    claims = None
    if claims_text:
        try:
            claims = json.loads(claims_text)
        except (ValueError, RecursionError) as exc:
            raise InvalidQuestion(f"the claims are not JSON: {exc}") from None
    return _checked(
        model, [{"role": "user", "content": message}], claims, form.get("proposal") or None
    )


def question_from_json(document: Any) -> Question:
    """A question as JSON: ``{"model", "messages": [...], "claims": {...}|null, "proposal"}``."""
    if not isinstance(document, dict):
        raise InvalidQuestion("the question must be a JSON object")
    messages = document.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidQuestion("messages must be a list of objects")
    proposal = document.get("proposal")
    return _checked(
        str(document.get("model", "")).strip(),
        messages,
        document.get("claims"),
        None if proposal is None else str(proposal),
    )


def _checked(
    model: str, messages: list[dict[str, Any]], claims: Any, proposal: str | None
) -> Question:
    if not model or len(model) > 256:
        raise InvalidQuestion("name a model (at most 256 characters)")
    if claims is not None and not isinstance(claims, dict):
        raise InvalidQuestion("the claims must be a JSON object")
    return Question(model, messages, claims, proposal)


def policy_input(
    question: Question, version: PolicyVersion, issuer: str | None, upstream: str | None
) -> dict[str, Any]:
    """The input document the request path would build for this chat request.

    Raise InvalidQuestion if the body would be refused before policy (400).
    """
    body = {"model": question.model, "messages": question.messages}
    try:
        parsed = parse_json_body(json.dumps(body).encode(), MAX_DEPTH)
    except InvalidBody as exc:
        raise InvalidQuestion(str(exc)) from None
    except RecursionError:
        raise InvalidQuestion(f"the messages are nested deeper than {MAX_DEPTH}") from None
    facts = RequestFacts(
        api="chat.completions",
        model=question.model,
        stream=False,
        body=parsed.value,
        method="POST",
        path="/v1/chat/completions",
        query={},
        headers={"content-type": "application/json"},
        upstream=upstream,
        texts=parsed.texts,
    )
    caller = (
        Caller(authenticated=False)
        if question.claims is None
        else Caller(True, sub=DRY_RUN_SUB, iss=issuer, claims=question.claims)
    )
    return build_input(facts, caller, version)


class RateLimit:
    """A token bucket: ``per_minute`` questions a minute, up to a minute's worth at once."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic):
        self._rate = per_minute / 60
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
