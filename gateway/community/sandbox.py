"""What a proposal's bundle may do when the gateway evaluates it in shadow.

Anyone who can make a proposal can put Rego in front of the gateway's shadow
OPA and the public dry-run form, which shows that Rego's reasons to anyone.
So before a proposal's bundle is loaded, ``opa check`` compiles it against
OPA's own capabilities minus the built-ins that reach outside the policy:
``http.send`` (requests from inside the operator's network), ``net.lookup_ip_addr``
(DNS), and ``opa.runtime`` (the process's environment, where the gateway's
secrets live). A bundle that calls one is refused with OPA's own message. And
every OPA the gateway starts runs with a bare environment, so that even
``opa.runtime`` in a ratified bundle finds no secret in it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.policy.opa import bare_environment

UNTRUSTED_BUILTINS = frozenset({"http.send", "net.lookup_ip_addr", "opa.runtime"})
"""Built-ins a shadow bundle may not call: each reaches the network or the environment."""

_capabilities: dict[str, bytes] = {}
"""OPA's current capabilities without UNTRUSTED_BUILTINS, per OPA binary."""


async def check_untrusted_bundle(binary: str, bundle: Path, workdir: Path) -> None:
    """Compile ``bundle`` with the restricted capabilities; RuntimeError saying what OPA
    said if it does not compile (an undefined function is a built-in it may not call)."""
    capabilities = workdir / "capabilities.json"
    capabilities.write_bytes(await _restricted_capabilities(binary))
    code, output = await _run(
        binary, "check", "--capabilities", str(capabilities), "--bundle", str(bundle)
    )
    if code != 0:
        said = output.decode(errors="replace").strip()[-300:]
        raise RuntimeError(
            "the bundle does not compile for shadow evaluation (the built-ins "
            f"{', '.join(sorted(UNTRUSTED_BUILTINS))} are not allowed): {said}"
        )


async def _restricted_capabilities(binary: str) -> bytes:
    if binary not in _capabilities:
        code, output = await _run(binary, "capabilities", "--current")
        if code != 0:
            raise RuntimeError(f"opa capabilities failed: {output.decode(errors='replace')}")
        document = json.loads(output)
        document["builtins"] = [
            b for b in document.get("builtins", []) if b.get("name") not in UNTRUSTED_BUILTINS
        ]
        _capabilities[binary] = json.dumps(document).encode()
    return _capabilities[binary]


async def _run(binary: str, *args: str) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=bare_environment(),
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output
