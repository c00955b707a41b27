"""The decision log as a transparency log, from outside: checkpoints, proofs, the CLI,
witnesses catching a fork, and Go's reference implementation checking what is served."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.decisionlog.record import parse_line, seal
from gateway.transparency.checkpoint import SignedCheckpoint
from gateway.transparency.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.transparency.note import COSIGNATURE_V1, Note, Signer
from tests.integration.conftest import RunningGateway, StartGateway
from tests.support import ROOT, TOOL_BIN, run_agora

LOG_KEY = Signer.generate("agora.test/decisions")
ORIGIN = "agora.test/decisions/replica-0"
WITNESSES = [Signer.generate(f"witness.test/w{i}", COSIGNATURE_V1) for i in (1, 2)]
TLOGCHECK = ROOT / "tools" / "tlogcheck"


@dataclass
class Keys:
    log_key_file: Path
    witness_key_files: list[Path]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    log_key_file = directory / "log.key"
    log_key_file.write_text(LOG_KEY.encode() + "\n")
    witness_files = []
    for number, witness in enumerate(WITNESSES, 1):
        path = directory / f"witness{number}.key"
        path.write_text(witness.encode() + "\n")
        witness_files.append(path)
    return Keys(log_key_file, witness_files)


def start(
    start_gateway: StartGateway, keys: Keys, log_path: Path, origin: str | None = None
) -> RunningGateway:
    return start_gateway(
        decision_log={"path": str(log_path), "durability": "batch"},
        transparency={
            "key_file": str(keys.log_key_file),
            "origin": origin,
            "checkpoint_every": 5,
            "checkpoint_interval_s": 0.2,
            "witnesses": [str(w.verifier) for w in WITNESSES],
        },
    )


def decide(gateway: RunningGateway, count: int, tag: str) -> list[str]:
    """Allowed and denied requests; their decision ids."""
    ids = []
    with gateway.client() as client:
        for i in range(count):
            model = "demo-small" if i % 3 else "demo-large"  # demo-large: denied, anonymous
            body = {"model": model, "messages": [{"role": "user", "content": f"{tag} {i}"}]}
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code in (200, 403), response.text
            ids.append(response.headers["x-agora-decision-id"])
    return ids


def settled(gateway: RunningGateway) -> SignedCheckpoint:
    """The latest checkpoint, once it covers every record written (outcomes included)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        count = httpx.get(f"{gateway.url}/transparency").json()["log"]["count"]
        response = httpx.get(f"{gateway.url}/transparency/checkpoint")
        if response.status_code == 200:
            signed = SignedCheckpoint.open(response.text, LOG_KEY.verifier)
            if signed.checkpoint.size == count:
                return signed
        time.sleep(0.1)
    raise AssertionError("no checkpoint covering the whole log")


@pytest.fixture(scope="module")
def gateway(
    start_gateway: StartGateway, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> RunningGateway:
    log_path = tmp_path_factory.mktemp("log") / "decisions.jsonl"
    running = start(start_gateway, keys, log_path, origin=ORIGIN)
    decide(running, 14, "warm-up")
    return running


def first_signed(gateway: RunningGateway) -> int:
    """The size of the first checkpoint the gateway signed (batches make sizes irregular)."""
    checkpoints = gateway.decision_log.with_name(gateway.decision_log.name + ".checkpoints")
    first = json.loads(checkpoints.read_text().splitlines()[0])["checkpoint"]
    return SignedCheckpoint.open(first, LOG_KEY.verifier).checkpoint.size


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def test_checkpoints_are_signed_notes_over_the_log(gateway: RunningGateway) -> None:
    signed = settled(gateway)
    response = httpx.get(f"{gateway.url}/transparency/checkpoint")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert signed.checkpoint.origin == ORIGIN
    lines = gateway.decision_log.read_bytes().splitlines()
    assert signed.checkpoint.size == len(lines)
    first = first_signed(gateway)
    assert 1 <= first < signed.checkpoint.size
    earlier = httpx.get(f"{gateway.url}/transparency/checkpoint", params={"size": first})
    assert SignedCheckpoint.open(earlier.text, LOG_KEY.verifier).checkpoint.size == first
    missing = httpx.get(f"{gateway.url}/transparency/checkpoint", params={"size": 10**9})
    assert missing.status_code == 404


def test_inclusion_and_consistency_proofs_verify(gateway: RunningGateway) -> None:
    [decision_id] = decide(gateway, 1, "proved")[-1:]
    head = settled(gateway).checkpoint
    lines = gateway.decision_log.read_bytes().splitlines(keepends=True)
    proofs = httpx.get(
        f"{gateway.url}/transparency/proof/inclusion", params={"decision_id": decision_id}
    ).json()
    assert proofs["tree_size"] == head.size and b64(proofs["root_hash"]) == head.root
    indices = [each["index"] for each in proofs["inclusions"]]
    assert indices, "the logged decision has no inclusion proof"
    assert [parse_line(lines[i].rstrip(b"\n"))["decision_id"] for i in indices] == [
        decision_id
    ] * len(indices)
    for each in proofs["inclusions"]:
        record = lines[each["index"]]
        leaf = leaf_hash(record[: record.rindex(b',"hash":')] + b"}")
        assert b64(each["leaf_hash"]) == leaf
        path = [b64(h) for h in each["proof"]]
        assert verify_inclusion(each["index"], head.size, leaf, path, head.root)
    by_index = httpx.get(f"{gateway.url}/transparency/proof/inclusion", params={"index": 0})
    assert by_index.json()["inclusions"][0]["index"] == 0
    size = first_signed(gateway)
    consistency = httpx.get(
        f"{gateway.url}/transparency/proof/consistency", params={"from": size}
    ).json()
    first = SignedCheckpoint.open(
        httpx.get(f"{gateway.url}/transparency/checkpoint", params={"size": size}).text,
        LOG_KEY.verifier,
    ).checkpoint
    proof = [b64(h) for h in consistency["proof"]]
    assert verify_consistency(size, head.size, first.root, head.root, proof)
    for params, status in (
        ({"index": 10**6}, 404),
        ({"index": "x"}, 400),
        ({"decision_id": "no-such-decision"}, 404),
        ({}, 400),
    ):
        response = httpx.get(f"{gateway.url}/transparency/proof/inclusion", params=params)
        assert response.status_code == status, (params, response.text)
    bad = httpx.get(f"{gateway.url}/transparency/proof/consistency", params={"from": 10**6})
    assert bad.status_code in (400, 404)


def test_agora_log_verify_holds_the_files_to_a_checkpoint(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    signed = settled(gateway)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.write_text(str(signed))
    vkey = str(LOG_KEY.verifier)
    copy = tmp_path / "decisions.jsonl"
    lines = gateway.decision_log.read_bytes().splitlines(keepends=True)[: signed.checkpoint.size]
    copy.write_bytes(b"".join(lines))
    ok = run_agora("log", "verify", str(copy), "--checkpoint", str(checkpoint), "--key", vkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"size {signed.checkpoint.size} root matches" in ok.stdout

    copy.write_bytes(b"".join(lines[:-2]))  # the tail cut: the chain alone still verifies
    cut = run_agora("log", "verify", str(copy), "--checkpoint", str(checkpoint), "--key", vkey)
    assert cut.returncode == 1 and "were cut" in cut.stdout, cut.stdout

    records = [parse_line(line.rstrip(b"\n")) for line in lines]
    records[3]["reasons"] = ["rewritten"]
    prev, out = records[2]["hash"], [b"".join(lines[:3])]
    for record in records[3:]:
        fields = {k: v for k, v in record.items() if k not in ("seq", "prev", "hash")}
        prev, line = seal(fields, record["seq"], prev)
        out.append(line)
    copy.write_bytes(b"".join(out))
    assert run_agora("log", "verify", str(copy)).returncode == 0  # the chain was recomputed
    forged = run_agora("log", "verify", str(copy), "--checkpoint", str(checkpoint), "--key", vkey)
    assert forged.returncode == 1 and "rewritten" in forged.stdout, forged.stdout

    other = Signer.generate("agora.test/decisions")
    wrong_key = run_agora(
        "log", "verify", str(copy), "--checkpoint", str(checkpoint), "--key", str(other.verifier)
    )
    assert wrong_key.returncode == 2


def test_agora_log_prove_matches_what_the_gateway_serves(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    head = settled(gateway).checkpoint
    size = str(head.size)
    offline = run_agora("log", "prove", str(gateway.decision_log), "--index", "3", "--size", size)
    assert offline.returncode == 0, offline.stderr
    served = httpx.get(
        f"{gateway.url}/transparency/proof/inclusion", params={"index": 3, "size": head.size}
    )
    assert json.loads(offline.stdout) == served.json()
    offline = run_agora("log", "prove", str(gateway.decision_log), "--from", "5", "--to", size)
    served = httpx.get(
        f"{gateway.url}/transparency/proof/consistency", params={"from": 5, "to": head.size}
    )
    assert json.loads(offline.stdout) == served.json()


def test_agora_log_keygen_writes_a_go_style_key(tmp_path: Path) -> None:
    result = run_agora("log", "keygen", "--name", "example.org/log", "-o", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    signer = Signer.parse((tmp_path / "k").read_text())
    assert result.stdout.strip() == str(signer.verifier)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    again = run_agora("log", "keygen", "--name", "example.org/log", "-o", str(tmp_path / "k"))
    assert again.returncode == 2


@pytest.fixture(scope="session")
def tlogcheck() -> Path:
    """tools/tlogcheck built once per source version into the tool cache."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not installed: the reference check needs the Go toolchain")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((TLOGCHECK / name).read_bytes())
    binary = TOOL_BIN / f"tlogcheck-{digest.hexdigest()[:16]}"
    if not binary.exists():
        TOOL_BIN.mkdir(parents=True, exist_ok=True)
        building = binary.with_name(binary.name + ".building")
        subprocess.run(
            [go, "build", "-trimpath", "-o", str(building), "."],
            cwd=TLOGCHECK, check=True, timeout=300,
        )  # fmt: skip
        building.rename(binary)
    return binary


def test_go_reference_implementation_accepts_checkpoints_and_proofs(
    gateway: RunningGateway, tlogcheck: Path
) -> None:
    [decision_id] = decide(gateway, 1, "go")
    settled(gateway)
    result = subprocess.run(
        [str(tlogcheck), "-url", gateway.url, "-vkey", str(LOG_KEY.verifier), "-origin", ORIGIN,
         "-from", str(first_signed(gateway)),
         "-records", str(gateway.decision_log), "-decision-id", decision_id],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok checkpoint signature" in result.stdout
    assert f"ok consistency {first_signed(gateway)} ->" in result.stdout
    assert "is the record's canonical bytes" in result.stdout


def witness(
    gateway: RunningGateway, keys: Keys, number: int, state: Path
) -> subprocess.CompletedProcess[str]:
    return run_agora(
        "log", "witness", "--url", gateway.url, "--log-key", str(LOG_KEY.verifier),
        "--key", str(keys.witness_key_files[number]), "--state", str(state),
    )  # fmt: skip


def test_witnesses_cosign_and_the_gateway_publishes_it(
    gateway: RunningGateway, keys: Keys, tmp_path: Path
) -> None:
    settled(gateway)
    result = witness(gateway, keys, 0, tmp_path / "w1.state")
    assert result.returncode == 0, result.stdout + result.stderr
    published = httpx.get(f"{gateway.url}/transparency/checkpoint").text
    note = Note.parse(published)
    assert note.verified_by(WITNESSES[0].verifier)
    assert note.verified_by(LOG_KEY.verifier)
    stranger = Signer.generate("witness.test/stranger", COSIGNATURE_V1)
    line = stranger.sign_line(note.text, int(time.time()))
    refused = httpx.post(f"{gateway.url}/transparency/cosignature", content=note.text + "\n" + line)
    assert refused.status_code == 403


@pytest.fixture
def forked(
    start_gateway: StartGateway, keys: Keys, tmp_path: Path
) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    """One log, then two: an operator copies it and runs both copies under the same key."""
    first = start(start_gateway, keys, tmp_path / "a" / "decisions.jsonl")
    decide(first, 7, "common")
    settled(first)
    first.process.stop()  # SIGTERM: a last checkpoint over everything
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("*.lock"))
    a = start(start_gateway, keys, tmp_path / "a" / "decisions.jsonl")
    b = start(start_gateway, keys, tmp_path / "b" / "decisions.jsonl")
    yield a, b
    a.process.stop()
    b.process.stop()


def test_a_fork_shown_to_two_witnesses_is_caught(
    forked: tuple[RunningGateway, RunningGateway], keys: Keys, tmp_path: Path
) -> None:
    a, b = forked
    states = [tmp_path / "w1.state", tmp_path / "w2.state"]
    for number in (0, 1):  # both see the common history
        assert witness(a, keys, number, states[number]).returncode == 0
    decide(a, 4, "branch a")
    decide(b, 6, "branch b")
    settled(a)
    settled(b)
    # Each branch alone extends what its witness saw: each witness cosigns its branch.
    assert witness(a, keys, 0, states[0]).returncode == 0
    assert witness(b, keys, 1, states[1]).returncode == 0
    held = [SignedCheckpoint.open(s.read_text(), LOG_KEY.verifier).checkpoint for s in states]
    assert held[0].root != held[1].root
    # Shown the other branch, each refuses and keeps what it held: the fork is caught.
    for number, other in ((0, b), (1, a)):
        result = witness(other, keys, number, states[number])
        assert result.returncode == 1, result.stdout + result.stderr
        assert "REFUSED" in result.stdout
        kept = SignedCheckpoint.open(states[number].read_text(), LOG_KEY.verifier).checkpoint
        assert kept == held[number]


def test_without_a_log_key_proofs_are_served_but_no_checkpoint(
    start_gateway: StartGateway,
) -> None:
    unsigned = start_gateway()
    decide(unsigned, 3, "unsigned")
    missing = httpx.get(f"{unsigned.url}/transparency/checkpoint")
    assert missing.status_code == 404 and "key_file" in missing.json()["error"]
    deadline = time.monotonic() + 10
    while httpx.get(f"{unsigned.url}/transparency").json()["log"]["count"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proof = httpx.get(f"{unsigned.url}/transparency/proof/inclusion", params={"index": 0})
    assert proof.status_code == 200, proof.text
    lines = unsigned.decision_log.read_bytes().splitlines(keepends=True)
    size = proof.json()["tree_size"]
    assert size >= 3
    root = b64(proof.json()["root_hash"])
    leaf = leaf_hash(lines[0][: lines[0].rindex(b',"hash":')] + b"}")
    path = [b64(h) for h in proof.json()["inclusions"][0]["proof"]]
    assert verify_inclusion(0, size, leaf, path, root)
