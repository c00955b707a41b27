"""The community page (``/community``) and the same data as JSON under ``/transparency/...``.

Read only: every route reads what the gateway already holds (the store, the
decision counts, the community worker's reading of the chain, the shadow's
counts); the dry-run form asks the shadow pool's OPAs and writes nothing.
Rendered on the server with Jinja2 (Starlette's own template support): no
build step, no script, nothing fetched from elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from gateway.community.charts import bar_chart
from gateway.community.diff import FileDiff, diff_bundles
from gateway.community.dryrun import (
    InvalidQuestion,
    Question,
    RateLimit,
    policy_input,
    question_from_form,
    question_from_json,
)
from gateway.community.rules import ReadableBundle, readable
from gateway.community.service import CommunityService
from gateway.community.shadow import Verdict
from gateway.config import Settings
from gateway.runtime import Gateway

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SHORT_ID = 12


def short(proposal_id: str) -> str:
    """A proposal id as shown in headings: a governor's hash ids are 78 digits long."""
    return proposal_id if len(proposal_id) <= SHORT_ID else proposal_id[: SHORT_ID - 2] + "…"


TEMPLATES.env.filters["short"] = short
NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    # The page loads nothing and runs no script: the browser is told so, which also keeps
    # anything that slipped past the templates' escaping (a proposal's text is anyone's)
    # from running or calling out. Inline styles only (the stylesheet, the legend's swatches).
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATS_COMMAND = "agora log stats --figures --json"


def routes(settings: Settings) -> list[Route]:
    """The page's routes on the public listener; none when ``community.enabled`` is false."""
    if not settings.community.enabled:
        return []
    limit = RateLimit(settings.community.dry_run.per_minute)

    async def dry_run_page(request: Request) -> Response:
        return await _dry_run(request, limit, as_json=False)

    async def dry_run_json(request: Request) -> Response:
        return await _dry_run(request, limit, as_json=True)

    return [
        Route("/community", community_page),
        Route("/community/diff", diff_page),
        Route("/community/dry-run", dry_run_page, methods=["POST"]),
        Route("/transparency/policy", policy_json),
        Route("/transparency/versions", versions_json),
        Route("/transparency/proposals", proposals_json),
        Route("/transparency/diff", diff_json),
        Route("/transparency/decisions", decisions_json),
        Route("/transparency/shadow", shadow_json),
        Route("/transparency/dry-run", dry_run_json, methods=["POST"]),
    ]


def _parts(request: Request) -> tuple[Gateway, CommunityService]:
    gateway: Gateway = request.app.state.gateway
    assert gateway.community is not None, "community routes are mounted only when enabled"
    return gateway, gateway.community


# -- what the page and the JSON share


async def in_force(gateway: Gateway, community: CommunityService) -> dict[str, Any] | None:
    """The version in force: digest, ratification (block, transaction, time), how long active."""
    active = gateway.store.active
    if active is None:
        return None
    ratification = None
    view = community.view
    if view is not None:
        for version in view.versions:
            if version.version == active.version and version.digest == active.digest:
                ratification = {
                    "block": version.block_number,
                    "transaction": version.transaction,
                    "time": _iso(version.timestamp),
                    "uri": version.uri,
                }
    files = await community.in_force()
    rules = await _readable(active.digest, files) if files is not None else None
    return {
        "version": active.version,
        "digest": active.digest,
        "ratified_block": active.ratified_block,
        "ratification": ratification,
        "active_since": _iso(active.activated_at),
        "active_for_s": round(time.time() - active.activated_at),
        "rules": None
        if rules is None
        else {
            "files": [asdict(f) for f in rules.rule_files],
            "tables": [asdict(t) for t in rules.tables],
        },
    }


def versions(community: CommunityService) -> list[dict[str, Any]]:
    view = community.view
    return [] if view is None else [asdict(v) | {"time": _iso(v.timestamp)} for v in view.versions]


def proposals(community: CommunityService) -> dict[str, Any]:
    view = community.view
    if view is None:
        return {"read_at": None, "head_block": None, "voting": None, "proposals": []}
    return {
        "read_at": _iso(community.read_at) if community.read_at else None,
        "head_block": view.head_block,
        "voting": None
        if view.voting is None
        else {"model": str(view.voting), "summary": view.voting.summary},
        "proposals": [
            asdict(p)
            | {
                "open": p.open,
                "blocks_left": max(p.deadline_block - view.head_block, 0),
                "bundle_verified": p.digest is not None
                and community.catalog.get(p.digest) is not None,
                "bundle_error": community.catalog.errors.get(p.digest or ""),
            }
            for p in view.proposals
        ],
    }


def _labels(gateway: Gateway, community: CommunityService) -> dict[str, str]:
    """Every digest the page can diff, with a label: versions, proposals, the one in force."""
    labels: dict[str, str] = {}
    active = gateway.store.active
    if active is not None:
        labels[active.digest] = f"v{active.version} (in force)"
    view = community.view
    if view is not None:
        for version in view.versions:
            labels.setdefault(version.digest, f"v{version.version}")
        for proposal in view.proposals:
            if proposal.digest is not None:
                labels.setdefault(proposal.digest, f"proposal {short(proposal.proposal_id)}")
    return labels


async def _diff(
    gateway: Gateway, community: CommunityService, old: str, new: str
) -> list[FileDiff] | str:
    """The diff between two known digests, or why there is none."""
    labels = _labels(gateway, community)
    await community.in_force()
    if old not in labels or new not in labels:
        return "choose two versions or proposals known on chain"
    before, after = community.catalog.get(old), community.catalog.get(new)
    if before is None or after is None:
        missing = old if before is None else new
        return f"bundle {missing} is not available: {community.catalog.errors.get(missing, '')}"
    key = (old, new, labels[old], labels[new])
    if key not in _DIFFS:
        _remember(_DIFFS, key, await asyncio.to_thread(diff_bundles, before, after, *key[2:]))
    return _DIFFS[key]


_DIFFS: dict[tuple[str, str, str, str], list[FileDiff]] = {}
_READABLE: dict[str, ReadableBundle] = {}
_MEMO_SIZE = 64
"""Diffs and readable views kept: a bundle never changes under its digest, and the page is
public, so each is computed once (in a worker thread), not once per visit."""


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    while len(memo) >= _MEMO_SIZE:
        del memo[next(iter(memo))]
    memo[key] = value


async def _readable(digest: str, files: Mapping[str, bytes]) -> ReadableBundle:
    if digest not in _READABLE:
        _remember(_READABLE, digest, await asyncio.to_thread(readable, files))
    return _READABLE[digest]


def _diff_json(diffs: list[FileDiff]) -> list[dict[str, Any]]:
    return [
        {
            "path": d.path,
            "change": d.change,
            "added": d.added,
            "removed": d.removed,
            "binary": d.binary,
            "lines": list(d.lines),
        }
        for d in diffs
    ]


def decisions(gateway: Gateway) -> dict[str, Any]:
    """The figures, as ``agora log stats --figures --json`` prints them, and the log's head."""
    writer = gateway.recorder.writer
    counts = gateway.recorder.counts
    return {
        "figures": counts.figures(),
        "log": {"count": writer.count, "head": writer.head_hash},
        "check": f"{STATS_COMMAND} {gateway.settings.decision_log.path}",
        "check_counts": f"agora log stats {gateway.settings.decision_log.path}",
    }


# -- JSON


async def policy_json(request: Request) -> Response:
    gateway, community = _parts(request)
    return JSONResponse(await in_force(gateway, community), headers=NO_STORE)


async def versions_json(request: Request) -> Response:
    _, community = _parts(request)
    return JSONResponse({"versions": versions(community)}, headers=NO_STORE)


async def proposals_json(request: Request) -> Response:
    _, community = _parts(request)
    return JSONResponse(proposals(community), headers=NO_STORE)


async def diff_json(request: Request) -> Response:
    gateway, community = _parts(request)
    old, new = request.query_params.get("from", ""), request.query_params.get("to", "")
    result = await _diff(gateway, community, old, new)
    if isinstance(result, str):
        return JSONResponse({"error": result}, status_code=404, headers=NO_STORE)
    return JSONResponse({"from": old, "to": new, "files": _diff_json(result)}, headers=NO_STORE)


async def decisions_json(request: Request) -> Response:
    gateway, _ = _parts(request)
    return JSONResponse(decisions(gateway), headers=NO_STORE)


async def shadow_json(request: Request) -> Response:
    _, community = _parts(request)
    shadow = community.shadow
    body = {"enabled": False} if shadow is None else {"enabled": True, **shadow.as_json()}
    return JSONResponse(body, headers=NO_STORE)


# -- HTML


async def community_page(request: Request) -> Response:
    return await _render(request, {})


async def diff_page(request: Request) -> Response:
    gateway, community = _parts(request)
    old, new = request.query_params.get("from", ""), request.query_params.get("to", "")
    result = await _diff(gateway, community, old, new)
    labels = _labels(gateway, community)
    return TEMPLATES.TemplateResponse(
        request,
        "diff.html",
        {
            "labels": labels,
            "old": old,
            "new": new,
            "diffs": None if isinstance(result, str) else result,
            "error": result if isinstance(result, str) else None,
        },
        status_code=404 if isinstance(result, str) else 200,
        headers=PAGE_HEADERS,
    )


async def _render(request: Request, extra: dict[str, Any], status: int = 200) -> Response:
    gateway, community = _parts(request)
    policy = await in_force(gateway, community)
    chain = proposals(community)
    open_diffs = []
    active = gateway.store.active
    for proposal in chain["proposals"]:
        if proposal["open"] and proposal["digest"] and active is not None:
            result = await _diff(gateway, community, active.digest, proposal["digest"])
            open_diffs.append((proposal, result))
    figures = decisions(gateway)
    shadow = community.shadow.as_json() if community.shadow is not None else None
    context = {
        "policy": policy,
        "versions": versions(community),
        "chain": chain,
        "chain_configured": gateway.settings.governance is not None,
        "governor_configured": gateway.settings.community.governor is not None,
        "open_diffs": open_diffs,
        "labels": _labels(gateway, community),
        "decisions": figures,
        "charts": _charts(figures["figures"], shadow),
        "shadow": shadow,
        "group_claim": gateway.settings.decision_log.group_claim,
        "dry_run_enabled": gateway.settings.community.dry_run.enabled,
        "open_proposals": [p for p in chain["proposals"] if p["open"] and p["digest"]],
        "form": {"model": "", "message": "", "claims": "", "proposal": ""},
        **extra,
    }
    return TEMPLATES.TemplateResponse(
        request, "community.html", context, status_code=status, headers=PAGE_HEADERS
    )


def _charts(figures: dict[str, Any], shadow: dict[str, Any] | None) -> dict[str, Any]:
    by_version: dict[str, dict[str, int]] = {}
    for hour in figures["by_hour"]:
        for version, counts in hour["by_version"].items():
            entry = by_version.setdefault(version, {"allowed": 0, "denied": 0, "failed_closed": 0})
            for key in entry:
                entry[key] += counts[key]
    charts: dict[str, Any] = {
        "by_version": bar_chart(
            "Decisions per policy version",
            [(f"v{v}", list(c.items())) for v, c in by_version.items()],
        ),
        "by_hour": bar_chart(
            "Decisions by the hour (UTC)",
            [
                (
                    h["hour"].replace("T", " ") + ":00",
                    [
                        (k, sum(c[k] for c in h["by_version"].values()))
                        for k in ("allowed", "denied", "failed_closed")
                    ],
                )
                for h in figures["by_hour"][-24:]
            ],
        ),
        "by_group": bar_chart(
            "Decisions per group",
            [
                (g, [(k, c[k]) for k in ("allowed", "denied", "failed_closed")])
                for g, c in figures["by_group"].items()
            ],
        ),
        "shadow": {},
    }
    for impact in (shadow or {}).get("proposals", []):
        charts["shadow"][impact["proposal_id"]] = bar_chart(
            "Requests the proposal would decide differently, per group",
            [
                (g, [("denied", e["would_deny"]), ("allowed", e["would_allow"])])
                for g, e in impact["by_group"].items()
            ],
        )
    return charts


async def _dry_run(request: Request, limit: RateLimit, *, as_json: bool) -> Response:
    gateway, community = _parts(request)
    config = gateway.settings.community.dry_run
    form: dict[str, str] = {}
    try:
        if not config.enabled:
            raise _Refusal(404, "the dry-run form is switched off (community.dry_run.enabled)")
        raw = await _read_bounded(request, config.max_bytes)
        if as_json:
            try:
                question = question_from_json(json.loads(raw))
            except (ValueError, RecursionError) as exc:
                raise _Refusal(400, f"the question is not valid: {exc}") from None
        else:
            form = dict(parse_qsl(raw.decode("utf-8", errors="replace"), max_num_fields=8))
            question = question_from_form(form)
        if not limit.take():
            raise _Refusal(429, "too many questions: try again in a minute")
        answer = await _answer(gateway, community, question)
    except InvalidQuestion as exc:
        return _dry_run_error(request, 400, str(exc), form, as_json)
    except _Refusal as exc:
        return _dry_run_error(request, exc.status, exc.message, form, as_json)
    if as_json:
        return JSONResponse(answer, headers=NO_STORE)
    return await _render(request, {"dry_run": answer, "form": _form(form)})


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _form(form: dict[str, str]) -> dict[str, str]:
    return {k: form.get(k, "") for k in ("model", "message", "claims", "proposal")}


def _dry_run_error(
    request: Request, status: int, message: str, form: dict[str, str], as_json: bool
) -> Response:
    if as_json:
        return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)
    return TEMPLATES.TemplateResponse(
        request, "error.html", {"message": message, "status": status}, status_code=status,
        headers=PAGE_HEADERS,
    )  # fmt: skip


async def _read_bounded(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refusal(413, f"the question is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(
    gateway: Gateway, community: CommunityService, question: Question
) -> dict[str, Any]:
    """Both decisions: the version in force's and the chosen (or first open) proposal's."""
    active = gateway.store.active
    files = await community.in_force()
    if active is None or files is None:
        raise _Refusal(503, "no verified policy version is in force")
    route = gateway.routes.route(question.model)
    document = policy_input(
        question, active, gateway.settings.auth.issuer, route.name if route else None
    )
    answer: dict[str, Any] = {
        "in_force": _verdict(
            f"v{active.version}", active.digest,
            await community.pool.decide(active.digest, files, document),
        ),
        "proposal": None,
    }  # fmt: skip
    candidates = [
        p
        for p in (community.view.proposals if community.view else ())
        if p.open and p.digest and community.catalog.get(p.digest) is not None
    ]
    chosen = next(
        (p for p in candidates if question.proposal in (None, p.proposal_id)),
        None,
    )
    if question.proposal is not None and chosen is None:
        raise _Refusal(404, f"no open proposal {question.proposal} with a verified bundle")
    if chosen is not None and chosen.digest is not None:
        proposed = community.catalog.get(chosen.digest)
        assert proposed is not None
        answer["proposal"] = _verdict(
            f"proposal {chosen.proposal_id}", chosen.digest,
            await community.pool.decide(chosen.digest, proposed, document),
        )  # fmt: skip
        answer["proposal"]["proposal_id"] = chosen.proposal_id
    return answer


def _verdict(label: str, digest: str, verdict: Verdict) -> dict[str, Any]:
    return {
        "label": label,
        "digest": digest,
        "allow": verdict.allow if verdict.error is None else None,
        "reasons": list(verdict.reasons),
        "error": verdict.error,
    }


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
