"""The environment variables ``agora gov`` reads, so that keys never go on the command line.

A module of its own so that the parser (:mod:`gateway.gov.cli`) can name them
in its help without loading web3, and the handlers can read them without
importing the parser.
"""

from __future__ import annotations

RPC_URL_ENV = "AGORA_RPC_URL"
"""JSON-RPC endpoint of the chain, when ``--rpc-url`` is not given."""
DEPLOYMENT_ENV = "AGORA_GOV_DEPLOYMENT"
"""Deployment file written by ``agora gov deploy --out``, when ``--deployment`` is not given."""
PRIVATE_KEY_ENV = "AGORA_GOV_PRIVATE_KEY"
"""Hex private key of the signing account, when no ``--keystore`` is given."""
KEYSTORE_PASSWORD_ENV = "AGORA_GOV_KEYSTORE_PASSWORD"
"""Password of the ``--keystore`` file (else it is asked for on a terminal)."""
