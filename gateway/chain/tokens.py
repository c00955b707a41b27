"""The AGORA voting token's units: amounts on chain are integers of 10^-18 token."""

from __future__ import annotations

TOKEN_SYMBOL = "AGORA"
TOKEN_DECIMALS = 18
TOKEN_UNIT = 10**TOKEN_DECIMALS


def format_tokens(base_units: int) -> str:
    """``base_units`` written in whole tokens, without trailing zeros (``1.5``, ``4000``)."""
    whole, fraction = divmod(base_units, TOKEN_UNIT)
    return f"{whole}.{fraction:0{TOKEN_DECIMALS}d}".rstrip("0").rstrip(".")
