"""The pieces every background worker shares: its state and detail, and stopping its task."""

from __future__ import annotations

import asyncio

from gateway.lifecycle import State, Status, cancel_task, unready_reasons


class _Worker(Status):
    name = "example"
    gates_readiness = True

    async def start(self) -> None:
        self._state, self._detail = State.OK, "running"

    async def stop(self) -> None:
        self._state, self._detail = State.STOPPED, "stopped"


async def test_a_worker_is_not_ready_until_it_says_otherwise() -> None:
    worker = _Worker()
    assert (worker.state, worker.detail) == (State.NOT_READY, "not started")
    assert unready_reasons([worker]) == ["example: not started"]
    await worker.start()
    assert (worker.state, worker.detail) == (State.OK, "running")
    assert unready_reasons([worker]) == []
    await worker.stop()
    assert unready_reasons([worker]) == ["example: stopped"]


async def test_cancel_task_ends_a_running_task_and_takes_none() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_task(task)
    assert task.cancelled()
    await cancel_task(None)
