"""The one place where chain failures become ``ChainError`` with a message a person can act on.

Library and transport errors (web3, eth-tester, HTTP) are translated by
:func:`chain_errors`; contract reverts are decoded against the ABIs of all of
Agora's contracts, so that a custom error such as ``NotTimelock(0x...)`` reads
as a sentence. Checks that produce errors of their own (network, contract
presence, proposal outcome) live here too, so the wording stays consistent.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as EthTesterValidationError
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    ProviderConnectionError,
    TimeExhausted,
    Web3Exception,
    Web3RPCError,
)

from gateway.chain.artifacts import CONTRACT_NAMES, load_artifact
from gateway.exceptions import ChainError
from gateway.gov.tokens import TOKEN_SYMBOL, format_tokens
from gateway.redaction import redact_urls

PROPOSAL_STATES = (
    "Pending",
    "Active",
    "Canceled",
    "Defeated",
    "Succeeded",
    "Queued",
    "Expired",
    "Executed",
)


@dataclass(frozen=True)
class _ErrorSpec:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]


@cache
def _error_specs() -> Mapping[bytes, _ErrorSpec]:
    """Custom errors of every Agora contract (and the OpenZeppelin code they embed), by selector."""
    specs: dict[bytes, _ErrorSpec] = {}
    for name in CONTRACT_NAMES:
        for entry in cast(Sequence[Mapping[str, Any]], load_artifact(name).abi):
            if entry.get("type") != "error":
                continue
            inputs: Sequence[Mapping[str, Any]] = entry.get("inputs", ())
            types = tuple(str(i["type"]) for i in inputs)
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            specs[selector] = _ErrorSpec(
                str(entry["name"]), tuple(str(i["name"]) for i in inputs), types
            )
    return specs


def _state_names(bitmap: bytes) -> str:
    """OpenZeppelin's ``bytes32`` state bitmap as names (bit i set: state i expected)."""
    bits = int.from_bytes(bitmap, "big")
    return " or ".join(s for i, s in enumerate(PROPOSAL_STATES) if bits >> i & 1)


def _tokens(base_units: int) -> str:
    return f"{format_tokens(base_units)} {TOKEN_SYMBOL}"


def _fmt(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


# Sentences for the errors a community member can actually cause; the rest are
# shown as ``Name(arg=value, ...)``.
_MESSAGES: Mapping[str, Callable[[dict[str, Any]], str]] = {
    "NotTimelock": lambda a: (
        f"only the governance timelock may ratify a policy; {a['caller']} is not it "
        "(ratify through a proposal: agora gov propose)"
    ),
    "ZeroDigest": lambda a: "the zero digest cannot be ratified",
    "DigestAlreadyCurrent": lambda a: (
        f"bundle sha256:{a['digest'].hex()} is already the current ratified version"
    ),
    "UnknownVersion": lambda a: f"policy version {a['version']} does not exist",
    "GovernorInsufficientProposerVotes": lambda a: (
        f"insufficient votes to propose: {a['proposer']} has {_tokens(a['votes'])}, "
        f"the proposal threshold is {_tokens(a['threshold'])}"
    ),
    "GovernorUnexpectedProposalState": lambda a: (
        f"proposal {a['proposalId']} is {PROPOSAL_STATES[a['current']]}"
        + (
            f", this needs it {_state_names(a['expectedStates'])}"
            if any(a["expectedStates"])
            else ""
        )
    ),
    "GovernorNonexistentProposal": lambda a: f"proposal {a['proposalId']} does not exist",
    "GovernorAlreadyCastVote": lambda a: f"{a['voter']} has already voted on this proposal",
    "GovernorInvalidVoteType": lambda a: "invalid vote: use for, against or abstain",
    "TimelockUnexpectedOperationState": lambda a: (
        "the timelock refused the operation: it is not ready "
        "(the timelock delay has not passed, or it was already executed or cancelled)"
    ),
    "AccessControlUnauthorizedAccount": lambda a: (
        f"{a['account']} lacks role 0x{a['neededRole'].hex()} on the timelock"
    ),
    "ERC20InsufficientBalance": lambda a: (
        f"{a['sender']} holds {_tokens(a['balance'])}, {_tokens(a['needed'])} needed"
    ),
}


def describe_revert(exc: ContractLogicError) -> str:
    """A readable reason for a contract revert reported by a JSON-RPC node."""
    if isinstance(exc, ContractPanicError):
        return f"the contract panicked ({exc.message})"
    if isinstance(exc, ContractCustomError) and isinstance(exc.data, str):
        return describe_revert_data(bytes.fromhex(exc.data.removeprefix("0x")))
    return f"the contract reverted: {exc.message or 'no reason given'}"


def describe_revert_data(raw: bytes) -> str:
    """A readable reason for raw revert data, decoding the custom errors of Agora's contracts."""
    spec = _error_specs().get(raw[:4])
    if spec is None:
        return f"the contract reverted with an unknown error 0x{raw[:4].hex()}"
    try:
        values = decode(list(spec.arg_types), raw[4:])
    except DecodingError:
        return f"the contract reverted with {spec.name} (undecodable arguments)"
    args = {
        name: Web3.to_checksum_address(value) if type_ == "address" else value
        for name, type_, value in zip(spec.arg_names, spec.arg_types, values, strict=True)
    }
    if spec.name in _MESSAGES:
        return _MESSAGES[spec.name](args)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in args.items())
    return f"the contract reverted with {spec.name}({shown})"


def _describe_eth_tester_failure(exc: TransactionFailed) -> str:
    """eth-tester reports a revert as the text ``execution reverted: b'<repr of the data>'``."""
    text = str(exc.args[0] if exc.args else exc).removeprefix("execution reverted: ")
    if text.startswith(("b'", 'b"')):
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raw = None
        if isinstance(raw, bytes) and len(raw) >= 4:
            return describe_revert_data(raw)
    return f"the contract reverted: {text or 'no reason given'}"


@contextmanager
def chain_errors(action: str) -> Iterator[None]:
    """Turn anything web3 or the transport raises while doing ``action`` into ``ChainError``.

    Transport errors are described by their cause only (``Connection refused``,
    ``HTTP 401``), never by their text: requests and urllib3 write the whole
    URL, with the API key of a hosted node, into it. Other messages have their
    URLs redacted to ``scheme://host[:port]``.
    """
    try:
        yield
    except ChainError:
        raise
    except ContractLogicError as exc:
        raise ChainError(f"{action}: {describe_revert(exc)}") from exc
    except TransactionFailed as exc:
        raise ChainError(f"{action}: {_describe_eth_tester_failure(exc)}") from exc
    except EthTesterValidationError as exc:
        raise ChainError(f"{action}: the embedded chain refused it: {exc}") from exc
    except (ProviderConnectionError, OSError) as exc:  # requests errors are OSErrors
        raise ChainError(
            f"{action}: the chain's JSON-RPC endpoint is unreachable ({_transport_reason(exc)}); "
            "is the node running, and is the URL right?"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ChainError(
            f"{action}: the node's answer is not JSON-RPC (an error page, or a redirect, "
            "which is not followed)"
        ) from exc
    except TimeExhausted as exc:
        raise ChainError(f"{action}: the transaction was not mined in time ({exc})") from exc
    except Web3RPCError as exc:
        message = redact_urls(str(exc.message))
        raise ChainError(f"{action}: the node refused the request: {message}") from exc
    except Web3Exception as exc:
        raise ChainError(f"{action}: {redact_urls(str(exc))}") from exc


def _transport_reason(exc: BaseException) -> str:
    """The root cause of a transport error (``Connection refused``, ``HTTP 401 Unauthorized``).

    Never the error's own text, which holds the URL.
    """
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(response, 'reason', '') or ''}".rstrip()
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip()
    if isinstance(exc, TimeoutError) or "timeout" in exc.__class__.__name__.lower():
        return "timed out"
    return exc.__class__.__name__


def check_chain_id(w3: Web3, expected: int | None) -> int:
    """The node's chain id; ``ChainError`` if it is not ``expected`` (the wrong network)."""
    with chain_errors("reading the chain id"):
        actual = int(w3.eth.chain_id)
    if expected is not None and actual != expected:
        raise ChainError(
            f"wrong network: the node reports chain id {actual}, expected {expected} "
            "(check --rpc-url and --chain-id, or the deployment file)"
        )
    return actual


def parse_address(value: str, what: str) -> ChecksumAddress:
    """``value`` as a checksum address, or ``ChainError`` naming ``what`` it should be."""
    if not Web3.is_address(value):
        raise ChainError(f"{what} {value!r} is not an Ethereum address")
    return Web3.to_checksum_address(value)


def require_contract(w3: Web3, address: ChecksumAddress, what: str) -> None:
    """``ChainError`` unless there is contract code at ``address`` (a typo, the wrong network)."""
    with chain_errors(f"checking the {what} at {address}"):
        code = w3.eth.get_code(address)
    if not code:
        raise ChainError(
            f"no contract at {address}: it is not a {what} on this network "
            "(wrong address, or the wrong --rpc-url / chain)"
        )


def defeated_reason(
    proposal_id: int, votes_for: int, votes_against: int, votes_abstain: int, quorum: int
) -> str:
    """Why a proposal was defeated: below quorum, or not more for than against (base units)."""
    participation = votes_for + votes_abstain
    if participation < quorum:
        return (
            f"proposal {proposal_id} was defeated: below quorum ({_tokens(participation)} "
            f"of the {_tokens(quorum)} needed voted for or abstain)"
        )
    return (
        f"proposal {proposal_id} was defeated: insufficient votes in favour "
        f"({_tokens(votes_for)} for, {_tokens(votes_against)} against)"
    )


def no_voting_power(voter: str, proposal_id: int, snapshot: int) -> str:
    """The voter had no delegated votes when the proposal took its snapshot."""
    return (
        f"insufficient votes: {voter} had no voting power at block {snapshot}, when proposal "
        f"{proposal_id} took its snapshot; tokens count as votes only once delegated "
        "(agora gov delegate), and only for proposals made after the delegation"
    )


def not_ready_reason(proposal_id: int, eta: int, now: int) -> str:
    """The timelock delay of a queued proposal has not passed yet."""
    when = datetime.fromtimestamp(eta, UTC).isoformat(timespec="seconds")
    return (
        f"proposal {proposal_id} is queued, but the timelock delay is not over: "
        f"it can be executed from {when} (in {eta - now} s)"
    )
