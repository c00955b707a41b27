"""Helpers shared by the test suites: ports, waiting for servers, keys and tokens."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.ports import free_port as free_port  # the suites' ports, as the gateway picks them

ROOT = Path(__file__).resolve().parent.parent
TOOL_BIN = Path(os.environ.get("AGORA_CACHE", Path.home() / ".cache/agora")) / "bin"
ISSUER = "https://issuer.test"
AUDIENCE = "agora"


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: the tool cache first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{TOOL_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def wait_for_http(url: str, timeout_s: float = 30.0, status: int | None = 200) -> httpx.Response:
    """Poll ``url`` until it answers (with ``status``, if given); fail at the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if status is None or response.status_code == status:
                return response
            last = response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    detail = last.text if isinstance(last, httpx.Response) else repr(last)
    raise TimeoutError(f"{url} not ready after {timeout_s}s: {detail}")


class Process:
    """A child process with its output captured to a file, stopped at teardown."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ):
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            list(args), stdout=self._log_file, stderr=subprocess.STDOUT, env=tool_env(env), cwd=cwd
        )

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()
        return self.popen.returncode

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")


def run_agora(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 110
) -> subprocess.CompletedProcess[str]:
    """``agora ARGS`` through the real entry point, in a fresh process; never raises on failure."""
    return subprocess.run(
        python_module("gateway", *args),
        env=tool_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


class Signer:
    """An RSA key pair that signs test tokens."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self,
        sub: str = "alice",
        groups: Sequence[str] = ("members",),
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        expires_in: int = 600,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": sub, "iss": issuer, "aud": audience, "iat": now,
            "exp": now + expires_in, "groups": list(groups), **claims,
        }  # fmt: skip
        headers = {"kid": kid} if kid else None
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers=headers)

    def jwks(self, kid: str) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}


def unsigned_token(**claims: Any) -> str:
    """A token with ``alg: none``, which must never be accepted."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."
