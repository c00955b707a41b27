"""A real redis-server on a loopback port, its files in a temporary directory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import redis

from tests.support import Process, free_port


class RedisServer:
    """One redis-server, no persistence; stop and start it again on the same port."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/install-tools.sh redis")
        self._binary = binary
        self._workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: Process | None = None
        self.start()

    def start(self) -> None:
        args = [
            self._binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self._workdir), "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        self._process = Process(args, self._workdir / f"redis-{time.monotonic_ns()}.log")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    output = self._process.output()
                    raise AssertionError(f"redis-server did not start:\n{output}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)
