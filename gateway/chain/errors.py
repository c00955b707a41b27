"""The one place where chain failures become ``ChainError`` with a message a person can act on.

Library and transport errors (web3, HTTP) are translated by :func:`chain_errors`;
contract reverts are decoded against the ABIs of all of Agora's contracts, so
that a custom error reads as a sentence (``sentences``: the registry's by
default; ``agora gov`` adds the governor's, the timelock's and the token's, see
:mod:`gateway.gov.errors`) or at least as ``Name(arg=value, ...)``. Checks that
produce errors of their own (network, contract presence) live here too, so the
wording stays consistent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
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
from gateway.redaction import redact_urls

RevertSentences = Mapping[str, Callable[[dict[str, Any]], str]]
"""Custom error name -> a sentence made from its decoded arguments."""


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


def _fmt(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


REGISTRY_SENTENCES: RevertSentences = {
    "NotTimelock": lambda a: (
        f"only the governance timelock may ratify a policy; {a['caller']} is not it "
        "(ratify through a proposal: agora gov propose)"
    ),
    "ZeroDigest": lambda a: "the zero digest cannot be ratified",
    "DigestAlreadyCurrent": lambda a: (
        f"bundle sha256:{a['digest'].hex()} is already the current ratified version"
    ),
    "UnknownVersion": lambda a: f"policy version {a['version']} does not exist",
}
"""Sentences for the errors of ``PolicyRegistry``."""


def describe_revert(
    exc: ContractLogicError, sentences: RevertSentences = REGISTRY_SENTENCES
) -> str:
    """A readable reason for a contract revert reported by a JSON-RPC node."""
    if isinstance(exc, ContractPanicError):
        return f"the contract panicked ({exc.message})"
    if isinstance(exc, ContractCustomError) and isinstance(exc.data, str):
        return describe_revert_data(bytes.fromhex(exc.data.removeprefix("0x")), sentences)
    return f"the contract reverted: {exc.message or 'no reason given'}"


def describe_revert_data(raw: bytes, sentences: RevertSentences = REGISTRY_SENTENCES) -> str:
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
    if spec.name in sentences:
        return sentences[spec.name](args)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in args.items())
    return f"the contract reverted with {spec.name}({shown})"


@contextmanager
def chain_errors(action: str, sentences: RevertSentences = REGISTRY_SENTENCES) -> Iterator[None]:
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
        raise ChainError(f"{action}: {describe_revert(exc, sentences)}") from exc
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
