"""What the gateway reads from the chain: the registry of ratified policy versions.

Modules, one concern each:

    artifacts    ABI and bytecode of the compiled contracts (shipped in the package)
    digests      ``sha256:<hex>`` strings <-> ``bytes32``
    errors       every web3/transport failure becomes a ``ChainError`` with a clear message
    rpc          connect to a JSON-RPC node and check it is the expected network
    registry     read-only client of PolicyRegistry (what the gateway polls)
    anchors      LogAnchor: the decision log's checkpoints anchored on chain (read, write, deploy)
    anchoring    the worker that anchors the log's latest checkpoint as it grows

The community's side, which sends transactions (``agora gov``), is :mod:`gateway.gov`.
"""
