"""Connecting to a JSON-RPC node (geth, a provider) and checking it is the expected network.

The URL of a hosted node often holds an API key: messages show it redacted.
"""

from __future__ import annotations

from web3 import HTTPProvider, Web3

from gateway.chain.errors import chain_errors, check_chain_id
from gateway.exceptions import ChainError
from gateway.redaction import redact_url

DEFAULT_TIMEOUT_S = 30.0


def connect(
    url: str, *, expected_chain_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Web3:
    """A ``Web3`` on ``url`` that answered and, if given, reports ``expected_chain_id``."""
    if not url.startswith(("http://", "https://")):
        raise ChainError(f"JSON-RPC URL {redact_url(url)} must start with http:// or https://")
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    with chain_errors(f"connecting to {redact_url(url)}"):
        w3.eth.block_number  # noqa: B018 - fails fast, with the transport's own reason
    check_chain_id(w3, expected_chain_id)
    return w3
