"""The one lifecycle every background worker shares: start, stop, a state and its reason.

Workers (managed OPA, the chain watcher, the decision log) are started in
order through one AsyncExitStack (gateway/runtime.py), so that a failed start
stops those already running, and they stop in reverse order. ``/readyz`` and
the ``agora_component_state`` metric are both derived from their states: a
worker that gates readiness makes the gateway unready while it is in
``NOT_READY``, ``ERROR`` or ``STOPPED``; ``WARN`` is shown, never gating.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import Protocol


class State(enum.Enum):
    NOT_READY = "not_ready"
    OK = "ok"
    WARN = "warn"
    ERROR = "error"
    STOPPED = "stopped"


UNREADY_STATES = frozenset({State.NOT_READY, State.ERROR, State.STOPPED})


class Worker(Protocol):
    """A background component of the gateway."""

    @property
    def name(self) -> str:
        """The component's name in ``/readyz`` and in ``agora_component_state``."""
        ...

    @property
    def gates_readiness(self) -> bool:
        """Whether the gateway is unready while this worker is not working."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def state(self) -> State: ...

    @property
    def detail(self) -> str:
        """One line for operators: why the state is what it is."""
        ...


class Status:
    """The state and detail a worker reports, kept in two fields it sets as it goes."""

    _state: State = State.NOT_READY
    _detail: str = "not started"

    @property
    def state(self) -> State:
        return self._state

    @property
    def detail(self) -> str:
        return self._detail


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a worker's background task (if any) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unready_reasons(workers: list[Worker] | tuple[Worker, ...]) -> list[str]:
    """Why the workers that gate readiness keep the gateway unready (none: they do not)."""
    return [
        f"{worker.name}: {worker.detail}"
        for worker in workers
        if worker.gates_readiness and worker.state in UNREADY_STATES
    ]
