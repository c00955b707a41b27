"""The one lifecycle every background worker shares: start, stop, and a state.

Workers (managed OPA, policy activation, chain watcher, decision-log writer)
report their state to ``/readyz`` and to the ``agora_component_state`` metric.
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


class Worker(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def state(self) -> State: ...

    @property
    def detail(self) -> str:
        """One line for operators: why the state is what it is."""
        ...
