"""The one lifecycle every background worker shares: start, stop, a state and its reason.

Workers (managed OPA, the chain watcher, the decision log) are started in
order through one AsyncExitStack (gateway/runtime.py), so that a failed start
stops those already running, and they stop in reverse order. ``/readyz`` and
the ``agora_component_state`` metric are both derived from their states: a
worker that gates readiness makes the gateway unready while it is in
``NOT_READY``, ``ERROR`` or ``STOPPED``; ``WARN`` is shown, never gating.
"""

from __future__ import annotations

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


def unready_reasons(workers: list[Worker] | tuple[Worker, ...]) -> list[str]:
    """Why the workers that gate readiness keep the gateway unready (none: they do not)."""
    return [
        f"{worker.name}: {worker.detail}"
        for worker in workers
        if worker.gates_readiness and worker.state in UNREADY_STATES
    ]
