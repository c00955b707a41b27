"""Fixtures of the soak tests: the integration fixtures, and the recording upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import conftest as integration
from tests.security.recording_upstream import RecordingUpstream, start_recording_upstream
from tests.support import run_agora

# The integration fixtures: the stand-in model, OPA, the trusted signer, gateways.
demo_model = integration.demo_model
opa_binary = integration.opa_binary
signer = integration.signer
start_gateway = integration.start_gateway


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.soak)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ratified_digest() -> str:
    """The digest of the default bundle: the version the soak gateways are pinned to."""
    done = run_agora("policy", "digest", "policies")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingUpstream]:
    """The model server, counting what it receives (tests/security/recording_upstream.py)."""
    upstream = start_recording_upstream(tmp_path_factory.mktemp("recorder"))
    yield upstream
    upstream.stop()
