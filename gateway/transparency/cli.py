"""``agora log keygen | prove | witness``, and ``agora log verify --checkpoint | --chain``.

Everything here works from files alone (``keygen``, ``prove``, ``verify``), from
a gateway's public URL (``witness``), or from a chain's JSON-RPC endpoint
(``verify --chain``, the checkpoints anchored on chain): what an outsider runs
to hold the operator to the log.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.files import PATHS_HELP, expand
from gateway.decisionlog.verify import VerifyResult, chain_order, verify
from gateway.exceptions import AgoraError
from gateway.transparency.checkpoint import Checkpoint, SignedCheckpoint
from gateway.transparency.log import decision_id_of_line, leaf_of_line
from gateway.transparency.merkle import MerkleTree, leaf_hash
from gateway.transparency.note import (
    COSIGNATURE_V1,
    NOTE_ED25519,
    Note,
    NoteError,
    Signer,
    Verifier,
)
from gateway.transparency.witness import Inconsistent, Witness, WitnessError

if TYPE_CHECKING:
    from gateway.chain.anchors import Anchor

ANCHOR_ENV = "AGORA_LOG_ANCHOR"
"""Address of the LogAnchor contract, when ``--anchor`` is not given."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keygen``, ``prove`` and ``witness`` to the ``agora log`` group."""
    keygen = commands.add_parser(
        "keygen",
        help="make an Ed25519 key for signing checkpoints (or, --witness, cosigning them)",
        description="Write a new signer key (PRIVATE+KEY+<name>+<id>+<base64>, as Go's "
        "golang.org/x/mod/sumdb/note writes it) to FILE, readable by its owner only, and print "
        "its verifier key, which is public.",
    )
    keygen.add_argument(
        "--name", required=True, help="key name and log origin, e.g. example.com/agora"
    )
    keygen.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    keygen.add_argument(
        "--witness", action="store_true", help="a witness's cosignature key (type 0x04)"
    )
    keygen.set_defaults(func=run_keygen)

    prove = commands.add_parser(
        "prove",
        help="inclusion or consistency proofs from the log files",
        description="Print, as the gateway serves it under /transparency/proof/, an inclusion "
        "proof of a record (--index, or --decision-id) or a consistency proof between two tree "
        "sizes (--from, --to), computed from the files alone.",
    )
    prove.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=PATHS_HELP)
    what = prove.add_mutually_exclusive_group(required=True)
    what.add_argument("--index", type=int, help="leaf index (seq - 1)")
    what.add_argument("--decision-id", help="the records of this decision")
    what.add_argument("--from", dest="first", type=int, help="consistency from this tree size")
    prove.add_argument("--size", "--to", dest="size", type=int, help="tree size (default: all)")
    prove.set_defaults(func=run_prove)

    witness = commands.add_parser(
        "witness",
        help="cosign a gateway's checkpoints after checking they extend the last one seen",
        description="Fetch the gateway's latest checkpoint, verify the log's signature and a "
        "consistency proof from the checkpoint held in --state, then cosign it (C2SP "
        "tlog-cosignature), keep it, and post the cosignature to the gateway. Exit 1 when the "
        "log does not extend what this witness saw (a fork or a rewrite); 2 on other errors.",
    )
    witness.add_argument("--url", required=True, help="the gateway's public URL")
    witness.add_argument("--log-key", required=True, help="the log's verifier key (or a file)")
    witness.add_argument("--key", type=Path, required=True, help="file with the witness's key")
    witness.add_argument("--state", type=Path, required=True, help="the last checkpoint accepted")
    witness.add_argument(
        "--origin", help="the log's origin (default: the first checkpoint's, then held to it)"
    )
    witness.add_argument(
        "--interval", type=float, default=0, help="repeat every this many seconds (0: once)"
    )
    witness.set_defaults(func=run_witness)


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """``agora log verify --checkpoint FILE [--key VKEY]``."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="a signed checkpoint: the files must hold exactly its tree (its size and root)",
    )
    parser.add_argument(
        "--key", help="the log's verifier key (or a file holding it), to check the checkpoint"
    )
    parser.add_argument(
        "--chain",
        metavar="RPC_URL",
        help="a chain's JSON-RPC endpoint: the files must hold the tree of every checkpoint "
        "anchored there for --origin (the LogAnchor at --anchor)",
    )
    parser.add_argument(
        "--anchor",
        metavar="ADDRESS",
        default=os.environ.get(ANCHOR_ENV),
        help=f"the LogAnchor contract (default: ${ANCHOR_ENV})",
    )
    parser.add_argument("--origin", help="the log's origin, as its checkpoints name it")
    parser.add_argument(
        "--chain-id", type=int, help="refuse a node on another chain (for example 1 for mainnet)"
    )


def check_checkpoint(args: argparse.Namespace, result: VerifyResult) -> int:
    """After a chain verified: do the files hold the checkpointed tree? Exit status."""
    if args.partial:
        print(
            "agora log verify: a checkpoint covers the chain from seq 1: no --partial",
            file=sys.stderr,
        )
        return 2
    try:
        checkpoint = _read_checkpoint(args.checkpoint, args.key)
    except (OSError, NoteError) as exc:
        print(f"agora log verify: {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    if result.count < checkpoint.size:
        print(
            f"FAILED: the files hold {result.count} records but the checkpoint commits to "
            f"{checkpoint.size}: records after {result.count} were cut"
        )
        return 1
    tree, _ = files_tree(list(result.files))
    if tree.root(checkpoint.size) != checkpoint.root:
        print(
            f"FAILED: the first {checkpoint.size} records are not the tree the checkpoint "
            "signed (different root hash): the log was rewritten"
        )
        return 1
    extra = result.count - checkpoint.size
    more = f"; {extra} later records are not covered by it" if extra else ""
    print(f"checkpoint: {checkpoint.origin} size {checkpoint.size} root matches{more}")
    return 0


def check_anchored(args: argparse.Namespace, result: VerifyResult) -> int:
    """After a chain verified: do the files hold every tree anchored on chain? Exit status."""
    if args.partial or not args.anchor or not args.origin:
        print(
            "agora log verify: --chain needs --anchor (or $" + ANCHOR_ENV + ") and --origin, "
            "and the whole chain from seq 1 (no --partial)",
            file=sys.stderr,
        )
        return 2
    from gateway.chain.anchors import read_anchors  # web3, only when a chain is asked

    try:
        anchors = read_anchors(args.chain, args.anchor, args.origin, chain_id=args.chain_id)
    except AgoraError as exc:
        print(f"agora log verify: {exc}", file=sys.stderr)
        return 2
    if not anchors:
        print(f"agora log verify: nothing is anchored for {args.origin!r} at {args.anchor}")
        return 2
    tree, _ = files_tree(list(result.files))
    failures = anchored_mismatches(anchors, result.count, tree)
    for failure in failures:
        print(f"FAILED: {failure}")
    if failures:
        return 1
    last = anchors[-1]
    print(
        f"anchors: {len(anchors)} checkpoints of {args.origin} anchored on chain, each root "
        f"matches (the latest: size {last.size}, block {last.block_number})"
    )
    return 0


def anchored_mismatches(anchors: Sequence[Anchor], count: int, tree: MerkleTree) -> list[str]:
    """What the files (``count`` records, their ``tree``) contradict among ``anchors``."""
    failures = []
    for anchor in anchors:
        where = f"anchor {anchor.index} (block {anchor.block_number})"
        if anchor.size > count:
            failures.append(
                f"{where} commits to {anchor.size} records but the files hold {count}: "
                f"records after {count} were cut"
            )
        elif tree.root(anchor.size) != anchor.root:
            failures.append(
                f"{where}: the first {anchor.size} records are not the anchored tree "
                "(different root hash): the log was rewritten"
            )
    return failures


def _read_checkpoint(path: Path, key: str | None) -> Checkpoint:
    text = path.read_text(encoding="utf-8")
    if key is None:
        print("warning: the checkpoint's signature is not checked (give --key)", file=sys.stderr)
        return Checkpoint.parse(Note.parse(text).text)
    return SignedCheckpoint.open(text, Verifier.parse(_key_text(key))).checkpoint


def _key_text(value: str) -> str:
    """A key given as itself or as a file holding it."""
    path = Path(value)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else value


def files_tree(files: list[Path]) -> tuple[MerkleTree, list[str]]:
    """The tree over the records of ``files`` (a whole chain), and their decision ids."""
    tree = MerkleTree()
    ids: list[str] = []
    for path in chain_order(files):
        with open(path, "rb") as file:
            hashes = []
            for line in file:
                hashes.append(leaf_hash(leaf_of_line(line)))
                ids.append(decision_id_of_line(line))
            tree.append(hashes)
    return tree, ids


def run_keygen(args: argparse.Namespace) -> int:
    kind = COSIGNATURE_V1 if args.witness else NOTE_ED25519
    try:
        signer = Signer.generate(args.name, kind)
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except NoteError as exc:
        print(f"agora log keygen: {exc}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(f"agora log keygen: {args.output} exists; not overwritten", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(signer.encode() + "\n")
    print(signer.verifier)
    return 0


def run_prove(args: argparse.Namespace) -> int:
    try:
        result = verify(expand(args.paths))
    except (DecisionLogError, OSError) as exc:
        print(f"agora log prove: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"FAILED: {result.first_bad}")
        return 1
    tree, ids = files_tree(list(result.files))
    size = tree.size if args.size is None else args.size
    if not 0 <= size <= tree.size:
        print(f"agora log prove: size {size}: the files hold {tree.size} records", file=sys.stderr)
        return 2
    b64 = _b64
    if args.first is not None:
        if not 0 <= args.first <= size:
            print(f"agora log prove: --from {args.first} is not in 0..{size}", file=sys.stderr)
            return 2
        proof = tree.consistency_proof(args.first, size)
        document: dict[str, object] = {"from": args.first, "to": size, "proof": b64(proof)}
    else:
        if args.decision_id is not None:
            indices = [i for i, each in enumerate(ids[:size]) if each == args.decision_id]
        else:
            indices = [args.index] if 0 <= args.index < size else []
        if not indices:
            print(f"agora log prove: no such record in the tree of {size}", file=sys.stderr)
            return 1
        document = {
            "tree_size": size,
            "root_hash": base64.b64encode(tree.root(size)).decode(),
            "inclusions": [
                {
                    "index": i,
                    "seq": i + 1,
                    "leaf_hash": base64.b64encode(tree.leaf(i)).decode(),
                    "proof": b64(tree.inclusion_proof(i, size)),
                }
                for i in indices
            ],
        }
    print(json.dumps(document, indent=2))
    return 0


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def run_witness(args: argparse.Namespace) -> int:
    try:
        witness = Witness(
            url=args.url,
            log_key=Verifier.parse(_key_text(args.log_key)),
            signer=Signer.parse(args.key.read_text(encoding="utf-8")),
            state=args.state,
            origin=args.origin,
        )
    except (OSError, NoteError, WitnessError) as exc:
        print(f"agora log witness: {exc}", file=sys.stderr)
        return 2
    while True:
        try:
            held = witness.step()
        except Inconsistent as exc:
            print(f"REFUSED: {exc}")
            return 1
        except (WitnessError, NoteError, ValueError) as exc:
            print(f"agora log witness: {exc}", file=sys.stderr)
            if not args.interval:
                return 2
        else:
            head = held.checkpoint
            print(f"cosigned: {head.origin} size {head.size}", flush=True)
        if not args.interval:
            return 0
        time.sleep(args.interval)
