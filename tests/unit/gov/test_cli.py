"""The ``agora gov`` parser and its error reporting (the lifecycle through it runs on geth)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.gov.cli import DEFAULT_WAIT_S, register
from gateway.gov.environment import DEPLOYMENT_ENV, PRIVATE_KEY_ENV, RPC_URL_ENV


@pytest.fixture
def parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    for name in (RPC_URL_ENV, DEPLOYMENT_ENV, PRIVATE_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    root = argparse.ArgumentParser(prog="agora")
    register(root.add_subparsers())
    return root


def run(parser: argparse.ArgumentParser, *argv: str) -> int:
    args = parser.parse_args(["gov", *argv])
    code: int = args.func(args)
    return code


def test_subcommands_parse_and_keys_are_not_options(parser: argparse.ArgumentParser) -> None:
    args = parser.parse_args(["gov", "vote", "3", "against", "--wait", "--reason", "too broad"])
    assert (args.proposal_id, args.support, args.wait, args.reason) == (
        3,
        "against",
        DEFAULT_WAIT_S,
        "too broad",
    )
    assert parser.parse_args(["gov", "execute", "3", "--wait", "30"]).wait == 30
    assert parser.parse_args(["gov", "queue", "3"]).wait is None
    deploy = parser.parse_args(["gov", "deploy", "--voting-period", "5", "--out", "d.json"])
    assert (deploy.voting_period, deploy.voting_delay, deploy.out) == (5, 7200, Path("d.json"))
    assert deploy.voting == "token" and deploy.membership_authority == "timelock"
    members = parser.parse_args(
        ["gov", "deploy", "--voting", "membership", "--member", "0x1", "--member", "0x2"]
    )
    assert (members.voting, members.members) == ("membership", ["0x1", "0x2"])
    add = parser.parse_args(["gov", "members", "add", "0xAb", "--note", "welcome"])
    assert (add.address, add.note) == ("0xAb", "welcome")
    assert parser.parse_args(["gov", "members", "list", "--json"]).json
    for argv in (
        ["vote", "3", "maybe"],
        ["deploy", "--private-key", "0x11"],
        [],
        ["deploy", "--voting", "liquid"],
        ["members"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["gov", *argv])
        assert exit_info.value.code == 2


def test_expected_errors_are_one_line_and_exit_2(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(parser, "status") == 2
    assert capsys.readouterr().err == (
        f"agora gov: error: which contracts? pass --deployment FILE (or set {DEPLOYMENT_ENV}), "
        "or both --governor and --registry\n"
    )
    assert (
        run(parser, "status", "--governor", "0x" + "11" * 20, "--registry", "0x" + "22" * 20) == 2
    )
    assert "no chain to talk to: pass --rpc-url URL" in capsys.readouterr().err

    existing = tmp_path / "deployment.json"
    existing.write_text("{}")
    assert run(parser, "deploy", "--out", str(existing)) == 2
    assert "exists: it may hold a deployment" in capsys.readouterr().err
    assert run(parser, "status", "--deployment", str(existing)) == 2
    assert f"deployment file {existing} is invalid" in capsys.readouterr().err


def test_a_deployment_for_another_chain_is_refused(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    address = "0x" + "12" * 20
    deployment = tmp_path / "deployment.json"
    deployment.write_text(
        '{"chain_id": 1337, "block_number": 1, '
        + ", ".join(
            f'"{k}": "{address}"' for k in ("token", "timelock", "governor", "registry", "deployer")
        )
        + "}"
    )
    code = run(
        parser,
        "status",
        "--deployment",
        str(deployment),
        "--chain-id",
        "1",
        "--rpc-url",
        "http://x",
    )
    assert code == 2
    assert "wrong network: --chain-id 1 but the deployment file is for chain 1337" in (
        capsys.readouterr().err
    )
