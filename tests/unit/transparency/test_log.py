"""The writer's tree and checkpoints: emitted in order, refused when the log was cut or
rewritten, and consistent across a SIGKILL mid-write."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DecisionLog, Transparency
from gateway.decisionlog import DecisionLogError, DecisionLogWriter, seal, verify
from gateway.decisionlog.files import rotated_files
from gateway.decisionlog.record import parse_line
from gateway.exceptions import ConfigError
from gateway.transparency.checkpoint import SignedCheckpoint
from gateway.transparency.log import leaf_of_line
from gateway.transparency.merkle import MerkleTree, leaf_hash, verify_consistency
from gateway.transparency.note import COSIGNATURE_V1, NoteError, Signer
from tests.unit.decisionlog.samples import decision, outcome_of

ROOT = Path(__file__).resolve().parents[3]
LOG_KEY = Signer.generate("agora.test/log")
ENV = {"AGORA_TEST_CALLER_KEY": "k" * 32, "AGORA_TEST_LOG_KEY": LOG_KEY.encode()}


def configs(tmp_path: Path, **changes: Any) -> tuple[DecisionLog, Transparency]:
    log = DecisionLog(
        path=tmp_path / "decisions.jsonl", caller_hash_key_env="AGORA_TEST_CALLER_KEY"
    )
    return log, Transparency(key_env="AGORA_TEST_LOG_KEY", **changes)


async def run_writer(
    tmp_path: Path, first: int, count: int, durable: bool = False, **changes: Any
) -> DecisionLogWriter:
    log, transparency = configs(tmp_path, **changes)
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    for i in range(first, first + count):
        await writer.submit(decision(i), durable=durable)  # durable: a batch each
    await writer.stop()
    return writer


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def checkpoints(tmp_path: Path) -> list[SignedCheckpoint]:
    entries = [json.loads(line) for line in lines(tmp_path / "decisions.jsonl.checkpoints")]
    return [
        SignedCheckpoint.open(e["checkpoint"], LOG_KEY.verifier)
        for e in entries
        if "checkpoint" in e
    ]


def naive_tree(path: Path) -> MerkleTree:
    tree = MerkleTree()
    tree.append(leaf_hash(leaf_of_line(line)) for line in lines(path))
    return tree


async def test_checkpoints_every_n_records_and_at_shutdown(tmp_path: Path) -> None:
    writer = await run_writer(tmp_path, 0, 35, durable=True, checkpoint_every=10)
    signed = checkpoints(tmp_path)
    sizes = [c.checkpoint.size for c in signed]
    assert sizes == [10, 20, 30, 35]
    tree = naive_tree(tmp_path / "decisions.jsonl")
    for c in signed:
        assert c.checkpoint.origin == "agora.test/log"
        assert c.checkpoint.root == tree.root(c.checkpoint.size)
    assert writer.transparency.tree_head() == ("agora.test/log", 35, tree.root())
    first = lines(tmp_path / "decisions.jsonl")[0]
    assert leaf_of_line(first) == first[: first.index(b',"hash":')] + b"}"
    assert (
        "sha256:" + hashlib.sha256(leaf_of_line(first)).hexdigest()
        == (parse_line(first[:-1])["hash"])
    )


async def test_a_checkpoint_comes_after_the_interval_with_records_waiting(tmp_path: Path) -> None:
    log, transparency = configs(tmp_path, checkpoint_every=1000, checkpoint_interval_s=0.05)
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    for i in range(3):
        await writer.submit(decision(i))
    for _ in range(250):
        if writer.transparency.latest is not None:
            break
        await asyncio.sleep(0.02)
    latest = writer.transparency.latest
    assert latest is not None and latest.checkpoint.size == 3
    await writer.stop()


async def test_decisions_are_found_by_id(tmp_path: Path) -> None:
    log, transparency = configs(tmp_path)
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    allowed = decision(1)
    for entry in (decision(0), allowed, decision(2), outcome_of(allowed)):
        await writer.submit(entry)
    await writer.stop()
    assert writer.transparency.find("d-000001") == [1, 3]
    assert writer.transparency.find("nope") == []
    restarted = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await restarted.start()  # the index is rebuilt from the files
    assert restarted.transparency.find("d-000001") == [1, 3]
    await restarted.stop()


def rewrite(path: Path, index: int) -> None:
    """Change one record and recompute the whole chain after it, as a forger would."""
    records = [parse_line(line.rstrip(b"\n")) for line in lines(path)]
    records[index]["reasons"] = ["rewritten"]
    prev = records[index - 1]["hash"] if index else None
    out = [b"".join(lines(path)[:index])]
    for record in records[index:]:
        fields = {k: v for k, v in record.items() if k not in ("seq", "prev", "hash")}
        prev, line = seal(fields, record["seq"], prev)
        out.append(line)
    path.write_bytes(b"".join(out))


async def test_a_rewritten_log_is_never_signed_again(tmp_path: Path) -> None:
    await run_writer(tmp_path, 0, 20, durable=True, checkpoint_every=10)
    rewrite(tmp_path / "decisions.jsonl", 5)
    assert verify([tmp_path / "decisions.jsonl"]).ok  # the chain alone cannot tell
    log, transparency = configs(tmp_path)
    with pytest.raises(DecisionLogError, match="not consistent"):
        await DecisionLogWriter(log, environ=ENV, transparency=transparency).start()


async def test_a_cut_log_is_never_signed_again(tmp_path: Path) -> None:
    await run_writer(tmp_path, 0, 20, durable=True, checkpoint_every=10)
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b"".join(lines(path)[:15]))
    log, transparency = configs(tmp_path)
    with pytest.raises(DecisionLogError, match="was cut"):
        await DecisionLogWriter(log, environ=ENV, transparency=transparency).start()


def test_a_witness_key_cannot_sign_the_log(tmp_path: Path) -> None:
    witness = Signer.generate("w.example", COSIGNATURE_V1)
    log, transparency = configs(tmp_path)
    with pytest.raises(ConfigError, match=r"transparency\.key_env"):
        DecisionLogWriter(log, environ={**ENV, "AGORA_TEST_LOG_KEY": witness.encode()},
                          transparency=transparency)  # fmt: skip


async def test_cosignatures_of_configured_witnesses_are_published(tmp_path: Path) -> None:
    witness, stranger = (Signer.generate(n, COSIGNATURE_V1) for n in ("w1.example", "w2.example"))
    log, transparency = configs(tmp_path, witnesses=[str(witness.verifier)])
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    await writer.submit(decision(0))
    await writer.stop()
    tlog = writer.transparency
    latest = tlog.latest
    assert latest is not None
    text = latest.note.text
    with pytest.raises(NoteError, match="configured witness"):
        tlog.cosign(text + "\n" + stranger.sign_line(text, int(time.time())))
    line = witness.sign_line(text, int(time.time()))
    assert tlog.cosign(text + "\n" + line) == "w1.example"
    assert tlog.latest is not None and tlog.latest.note.signatures[-1] == line
    again = witness.sign_line(text, int(time.time()) + 1)
    assert tlog.cosign(text + "\n" + again) == "w1.example"
    assert tlog.latest.note.signatures[-1] == line and len(tlog.latest.note.signatures) == 2
    restarted = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await restarted.start()  # cosignatures are kept in the checkpoints file
    assert restarted.transparency.latest == tlog.latest
    await restarted.stop()


WRITE_FOREVER = """
import asyncio, sys
from pathlib import Path
from gateway.config import DecisionLog, Transparency
from gateway.decisionlog import DecisionLogWriter
from tests.unit.decisionlog.samples import decision

async def main():
    log = DecisionLog(path=Path(sys.argv[1]), caller_hash_key_env="AGORA_TEST_CALLER_KEY")
    writer = DecisionLogWriter(log, transparency=Transparency(
        key_env="AGORA_TEST_LOG_KEY", checkpoint_every=50))
    await writer.start()
    i = 0
    while True:
        await writer.submit(decision(i))
        i += 1
        if i % 20 == 0:
            await asyncio.sleep(0)

asyncio.run(main())
"""


def kill_mid_write(path: Path) -> None:
    """Run a writer that submits without end; SIGKILL it once it signed three checkpoints."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_FOREVER, str(path)],
        cwd=ROOT,
        env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)},
    )
    checkpoints_file = path.with_name(path.name + ".checkpoints")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if checkpoints_file.exists() and len(lines(checkpoints_file)) >= 3:
                return
            time.sleep(0.01)
        pytest.fail("the writer signed no checkpoints")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


async def test_after_a_sigkill_the_next_checkpoint_is_consistent_with_the_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "decisions.jsonl"
    kill_mid_write(path)
    before = checkpoints(tmp_path)[-1].checkpoint
    writer = await run_writer(tmp_path, 10**6, 7, checkpoint_every=50)
    after = checkpoints(tmp_path)[-1].checkpoint
    assert after.size == writer.count > before.size
    proof = writer.transparency.tree.consistency_proof(before.size, after.size)
    assert verify_consistency(before.size, after.size, before.root, after.root, proof)
    assert naive_tree(path).root() == after.root
    assert verify([path]).ok


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    """The tree builds on the decision log's files and errors, and the writer keeps a tree."""
    for name in ("store", "log", "checkpoint", "endpoints", "cli", "witness"):
        code = f"import gateway.transparency.{name}"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-c", "import gateway.decisionlog"], cwd=ROOT, check=True)


async def test_the_tree_spans_rotated_files_and_is_rebuilt_from_them(tmp_path: Path) -> None:
    log, transparency = configs(tmp_path, checkpoint_every=7)
    log = log.model_copy(update={"rotate_bytes": 2000})
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    for i in range(40):
        await writer.submit(decision(i), durable=True)
    await writer.stop()
    files = [*rotated_files(log.path), log.path]
    assert len(files) > 3
    tree = MerkleTree()
    tree.append(leaf_hash(leaf_of_line(line)) for path in files for line in lines(path))
    assert writer.transparency.tree.root() == tree.root()
    restarted = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await restarted.start()
    assert restarted.transparency.tree.root() == tree.root()
    assert restarted.transparency.find("d-000003") == [3]
    await restarted.stop()


async def test_archived_files_leave_no_tree_and_no_signing(tmp_path: Path) -> None:
    log, transparency = configs(tmp_path, checkpoint_every=7)
    log = log.model_copy(update={"rotate_bytes": 2000})
    unsigned = Transparency()
    writer = DecisionLogWriter(log, environ=ENV, transparency=transparency)
    await writer.start()
    for i in range(30):
        await writer.submit(decision(i), durable=True)
    await writer.stop()
    rotated_files(log.path)[0].unlink()  # archived away
    without_key = DecisionLogWriter(log, environ=ENV, transparency=unsigned)
    await without_key.start()  # the log goes on; proofs are unavailable
    assert not without_key.transparency.available
    await without_key.submit(decision(99))
    await without_key.stop()
    with pytest.raises(DecisionLogError, match="from seq 1"):
        await DecisionLogWriter(log, environ=ENV, transparency=transparency).start()
