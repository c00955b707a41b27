"""Fixtures of the security tests: the integration fixtures, keys, and JWKS endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import conftest as integration
from tests.security.jwks_server import JwksServer
from tests.support import Signer

# The integration fixtures: the stand-in model, OPA, the trusted signer, gateways.
demo_model = integration.demo_model
opa_binary = integration.opa_binary
signer = integration.signer
start_gateway = integration.start_gateway


@pytest.fixture(scope="session")
def attacker() -> Signer:
    """A key pair the gateway has never been told about."""
    return Signer()


@pytest.fixture
def trusted_jwks(signer: Signer) -> Iterator[JwksServer]:
    """The identity provider's JWKS: the trusted key under kid ``k1``."""
    server = JwksServer(signer.jwks("k1"))
    yield server
    server.close()


@pytest.fixture
def attacker_jwks(attacker: Signer) -> Iterator[JwksServer]:
    """A JWKS the attacker controls; no test may ever see it fetched."""
    server = JwksServer(attacker.jwks("attacker-1"))
    yield server
    server.close()
