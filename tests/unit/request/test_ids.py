"""Decision ids: UUIDv4 text, as uuid.uuid4() writes it, never repeated."""

from __future__ import annotations

import os
import uuid

import pytest

from gateway.request import ids
from gateway.request.ids import DecisionIds


def test_ids_are_version_4_uuids_written_as_uuid_writes_them() -> None:
    made = DecisionIds()
    seen = [made.next() for _ in range(3 * 256 + 5)]  # across refills of the pool
    assert len(set(seen)) == len(seen)
    for text in seen:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_an_id_is_the_uuid4_of_its_sixteen_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    pools = [bytes(range(i, i + 16)) * 256 for i in (0, 200)]
    monkeypatch.setattr(ids.os, "urandom", lambda n: pools.pop(0)[:n])
    made = DecisionIds()
    for start in (0, 200):
        expected = str(uuid.UUID(bytes=bytes(range(start, start + 16)), version=4))
        assert [made.next() for _ in range(256)] == [expected] * 256


def test_a_forked_child_draws_its_own_ids() -> None:
    made = DecisionIds()
    made.next()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, made.next().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() != made.next()
    os.close(read)
