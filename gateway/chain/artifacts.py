"""The compiled contracts, loaded from the JSON artifacts shipped inside this package.

``scripts/compile-contracts.sh`` writes them to ``contracts/artifacts/`` and copies
them to ``gateway/chain/artifacts/`` so that an installed package needs no checkout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal, get_args

from eth_typing import ABI, HexStr

from gateway.exceptions import ChainError

ContractName = Literal[
    "AgoraToken",
    "AgoraGovernor",
    "AgoraMembership",
    "AgoraMembersQuadraticGovernor",
    "AgoraQuadraticGovernor",
    "PolicyRegistry",
    "TimelockController",
    "LogAnchor",
]
CONTRACT_NAMES: tuple[ContractName, ...] = get_args(ContractName)


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one contract."""

    name: ContractName
    abi: ABI
    bytecode: HexStr


@cache
def load_artifact(name: ContractName) -> Artifact:
    """The artifact of ``name``; cached, the files never change at run time."""
    resource = files(__package__).joinpath("artifacts", f"{name}.json")
    try:
        data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainError(
            f"contract artifact {name}.json is missing or unreadable ({exc}); "
            "run scripts/compile-contracts.sh"
        ) from exc
    return Artifact(name=name, abi=data["abi"], bytecode=HexStr(data["bytecode"]))
