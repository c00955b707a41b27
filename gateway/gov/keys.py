"""The account that signs governance transactions.

Keys come only from the environment or an encrypted keystore file, never from
the command line (where they would end up in shell history and ``ps``).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.exceptions import ConfigError
from gateway.gov.environment import KEYSTORE_PASSWORD_ENV, PRIVATE_KEY_ENV


def load_account(
    keystore: Path | None = None, environ: Mapping[str, str] = os.environ
) -> LocalAccount:
    """The signing account: from ``keystore`` if given, else from ``AGORA_GOV_PRIVATE_KEY``.

    The keystore password comes from ``AGORA_GOV_KEYSTORE_PASSWORD``, or a prompt
    when running on a terminal.
    """
    if keystore is not None:
        return _from_keystore(keystore, environ)
    key = environ.get(PRIVATE_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"no signing key: set {PRIVATE_KEY_ENV} (hex private key) "
            "or pass --keystore FILE (password in " + KEYSTORE_PASSWORD_ENV + ")"
        )
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{PRIVATE_KEY_ENV} is not a valid private key") from exc
    return account


def _from_keystore(path: Path, environ: Mapping[str, str]) -> LocalAccount:
    try:
        encrypted = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"keystore {path} cannot be read: {exc}") from exc
    password = environ.get(KEYSTORE_PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError(f"keystore {path} needs a password: set {KEYSTORE_PASSWORD_ENV}")
        password = getpass.getpass(f"password for {path}: ")
    try:
        key = Account.decrypt(encrypted, password)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"keystore {path} cannot be decrypted: {exc}") from exc
    account: LocalAccount = Account.from_key(key)
    return account
