"""Decisions asked of OPA through its Data API, and trusted only from the version in force.

A decision is only trusted when OPA names, through ``provenance``, the bundle
revision that produced it and that revision is the verified version in force
(or, for a short overlap during a switch, the one it superseded). Anything else
(OPA down, slow, no decision, an unknown or superseded revision) is
PolicyUnavailable: the gateway fails closed.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

from gateway.auth import Caller
from gateway.exceptions import DataApiError, PolicyUnavailable
from gateway.pinning.store import PolicyStore, PolicyVersion
from gateway.policy.dataapi import DataApiClient
from gateway.policy.encoded import INLINE_BYTES, EncodedInput
from gateway.policy.input import RequestFacts, build_input

_ATTEMPTS = 3
_NO_INPUT = b'{"input":{}}'


@dataclass(frozen=True)
class Decision:
    """OPA's answer, and the verified version that produced it."""

    allow: bool
    reasons: list[str]
    version: PolicyVersion
    max_tokens: int | None = None
    """The output cap the gateway must apply to what it forwards (an obligation)."""
    status: int | None = None
    """429 when a deny is a spent budget (the caller may retry later); None: 403."""
    retry_after_s: int | None = None
    """With status 429: when the caller may try again (``Retry-After``)."""


class PolicyEngine:
    """Asks OPA for decisions at the configured path, within a hard timeout.

    The timeout grows with the request body (``timeout_ms_per_mib``): OPA reads
    and evaluates the whole input, so a 1 MiB body costs it 100 to 200 ms on two
    cores where a chat message costs under one. A fixed budget sized for small
    requests would refuse every large one that the body limit admits.

    The budget is OPA's own handling time, as OPA reports it (``metrics``), not
    the wall-clock time around the call: under load, the gateway's event loop
    takes a while to send the question and to resume with the answer, and
    counting that would turn the gateway's own busyness into fail-closed 503s
    with OPA healthy. The wall clock is bounded too, by the budget plus
    ``queue_allowance_ms``: an OPA that does not answer at all still fails
    closed.
    """

    def __init__(
        self,
        opa_url: str,
        decision_path: str,
        timeout_ms: int,
        store: PolicyStore,
        switch_overlap_ms: int,
        timeout_ms_per_mib: int = 0,
        queue_allowance_ms: int = 0,
        response_path: str = "agora/response",
    ):
        self._client = DataApiClient(opa_url)
        self._decision_path = self._data_path(decision_path)
        self._response_path = self._data_path(response_path)
        self._judges_answers: dict[str, bool] = {}
        """Per bundle revision: whether it defines the response path (asked once per version)."""
        self._timeout_s = timeout_ms / 1000
        self._timeout_s_per_byte = timeout_ms_per_mib / 1000 / 2**20
        self._allowance_s = queue_allowance_ms / 1000
        self._overlap_s = switch_overlap_ms / 1000
        self._store = store

    @staticmethod
    def _data_path(path: str) -> str:
        return "/v1/data/" + path.replace(".", "/").strip("/") + "?provenance=true&metrics=true"

    async def start(self) -> None:
        """Nothing to open: connections to OPA are made on the first questions."""

    async def stop(self) -> None:
        await self._client.close()

    async def decide(
        self, facts: RequestFacts, caller: Caller, body_bytes: int = 0
    ) -> tuple[Decision, EncodedInput]:
        """The decision for a request, and the input document it was judged on.

        ``body_bytes``, the size of the request body, extends OPA's time budget;
        a small body's document comes back encoded (EncodedInput), for the log
        and for response policy.

        Only the version in force judges, and, for ``policy.switch_overlap_ms``
        after a switch, the one it superseded (OPA activates the new bundle a
        moment after the gateway does). If OPA answers from the other of the two
        than the input named, the question is asked again with that version in
        the input, so that the whole decision belongs to one version. The store
        moves to a new version before OPA does, so one switch can cost two
        retries: asked as v2, judged by v1; asked as v1, judged by v2 (OPA
        switched meanwhile); asked as v2, judged by v2. An answer from any other
        revision, or from the superseded one after the overlap, fails closed.
        """
        expected = self._store.active
        if expected is None:
            raise PolicyUnavailable("no verified policy version is active")
        for _attempt in range(_ATTEMPTS):
            document = EncodedInput.of(
                build_input(facts, caller, expected), inline=body_bytes <= INLINE_BYTES
            )
            timeout_s = self._timeout_s + body_bytes * self._timeout_s_per_byte
            result, revision = await self._query(document.payload(), timeout_s)
            judged_by = self._store.judge(revision, self._overlap_s)
            if judged_by is None:
                raise PolicyUnavailable(self._refusal(revision))
            if judged_by.revision == expected.revision:
                return _to_decision(result, judged_by), document
            expected = judged_by
        raise PolicyUnavailable("the policy version kept changing during one decision")

    async def judges_answers(self, version: PolicyVersion) -> bool:
        """Whether ``version`` defines the response path: asked of OPA once per version.

        The answer is kept per revision, so a bundle without response rules costs
        one dictionary lookup per request. Only an answer from ``version`` itself
        counts (OPA may still be switching to it); otherwise PolicyUnavailable.
        """
        known = self._judges_answers.get(version.revision)
        if known is not None:
            return known
        for _attempt in range(_ATTEMPTS):
            result, revision = await self._query(
                _NO_INPUT, self._timeout_s, path=self._response_path
            )
            judged_by = self._store.lookup(revision)
            if judged_by is not None:
                self._judges_answers[judged_by.revision] = result is not None
            if judged_by is not None and judged_by.revision == version.revision:
                return result is not None
            await asyncio.sleep(0.05 * (_attempt + 1))
        raise PolicyUnavailable(
            f"OPA did not answer from version {version.version} whether it judges answers"
        )

    async def decide_answer(self, document: EncodedInput, input_bytes: int = 0) -> Decision:
        """The response policy's decision on an answer (``document``: docs/policy.md).

        Judged by the version in force, or the one it superseded during the
        switch overlap; any other answer, or none, is PolicyUnavailable.
        """
        timeout_s = self._timeout_s + input_bytes * self._timeout_s_per_byte
        result, revision = await self._query(
            document.payload(), timeout_s, path=self._response_path
        )
        judged_by = self._store.judge(revision, self._overlap_s)
        if judged_by is None:
            raise PolicyUnavailable(self._refusal(revision))
        return _to_decision(result, judged_by)

    def _refusal(self, revision: str | None) -> str:
        """Why an answer from ``revision`` does not count."""
        known = self._store.lookup(revision)
        active = self._store.active
        if known is None or active is None:
            return f"OPA answered from unverified bundle revision {revision!r}"
        return (
            f"OPA answered from superseded version {known.version}; version {active.version} "
            f"is in force since {self._store.seconds_since_switch:.1f} s"
        )

    async def revision(self) -> str | None:
        """The bundle revision OPA currently enforces (a cheap query), for readiness."""
        _, revision = await self._query(
            _NO_INPUT, self._timeout_s, path=self._data_path("agora/__revision")
        )
        return revision

    async def _query(
        self, payload: bytes, timeout_s: float, path: str | None = None
    ) -> tuple[Any, str | None]:
        """Ask OPA at ``path`` with ``payload`` (``{"input": ...}``): its result and revision."""
        request = self._client.request(path or self._decision_path, payload)
        wait_s = timeout_s + self._allowance_s
        try:
            async with asyncio.timeout(wait_s):
                status, body = await self._client.post(request)
        except TimeoutError as exc:
            raise PolicyUnavailable(f"OPA did not answer within {wait_s * 1000:.0f} ms") from exc
        except DataApiError as exc:
            raise PolicyUnavailable(f"OPA is unreachable: {exc}") from exc
        if status != 200:
            raise PolicyUnavailable(f"OPA answered HTTP {status}")
        try:
            response = json.loads(body)
        except ValueError as exc:
            raise PolicyUnavailable(f"OPA's answer is not JSON: {exc}") from exc
        if not isinstance(response, dict):
            raise PolicyUnavailable("OPA's answer is not a JSON object")
        handled_ns = _handling_time_ns(response)
        if handled_ns is None or handled_ns > timeout_s * 1e9:
            shown = "an unknown time" if handled_ns is None else f"{handled_ns / 1e6:.0f} ms"
            raise PolicyUnavailable(
                f"OPA took {shown} to decide, over its budget of {timeout_s * 1000:.0f} ms"
            )
        return response.get("result"), _revision_of(response)


def _handling_time_ns(response: dict[str, Any]) -> int | None:
    """How long OPA's HTTP handler took for this question (``?metrics=true``)."""
    metrics = response.get("metrics")
    handled = metrics.get("timer_server_handler_ns") if isinstance(metrics, dict) else None
    return handled if isinstance(handled, int) and not isinstance(handled, bool) else None


def _revision_of(response: dict[str, Any]) -> str | None:
    """The one bundle revision OPA's ``provenance`` names; None if it names none or several
    (a second bundle could contribute rules the digest does not cover).
    """
    provenance = response.get("provenance")
    bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
    if not isinstance(bundles, dict) or len(bundles) != 1:
        return None
    (entry,) = bundles.values()
    revision = entry.get("revision") if isinstance(entry, dict) else None
    return revision if isinstance(revision, str) else None


def _to_decision(result: Any, version: PolicyVersion) -> Decision:
    if result is None:
        raise PolicyUnavailable("the policy returned no decision at the configured path")
    if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
        return Decision(False, ["the policy decision is malformed (no boolean 'allow')"], version)
    raw_reasons = result.get("reasons") or []
    reasons = [str(r) for r in raw_reasons] if isinstance(raw_reasons, list) else [str(raw_reasons)]
    if not result["allow"] and not reasons:
        reasons = ["denied by policy"]
    max_tokens = result.get("max_tokens")
    if max_tokens is not None and not (
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0
    ):
        return Decision(
            False, ["the policy decision is malformed (max_tokens is not a positive integer)"],
            version,
        )  # fmt: skip
    status, retry_after_s = result.get("status"), result.get("retry_after_s")
    # A decision names both, or neither.
    if status is None and retry_after_s is None:
        return Decision(result["allow"], reasons, version, max_tokens)
    if status != 429 or retry_after_s is None or not _seconds(retry_after_s):
        return Decision(
            False,
            ["the policy decision is malformed (status must be 429, with retry_after_s a "
             "positive number of seconds)"],
            version, max_tokens,
        )  # fmt: skip
    retry = math.ceil(retry_after_s)
    return Decision(result["allow"], reasons, version, max_tokens, 429, retry)


def _seconds(value: object) -> bool:
    """A positive number of seconds, at most a year."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 31_536_000
    )
