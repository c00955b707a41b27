"""Governance on chain: the contracts' artifacts, deployment, proposals, and the registry reader.

Modules, one concern each:

    artifacts    ABI and bytecode of the compiled contracts (shipped in the package)
    digests      ``sha256:<hex>`` strings <-> ``bytes32``
    errors       every web3/transport failure becomes a ``ChainError`` with a clear message
    rpc          connect to a JSON-RPC node and check it is the expected network
    keys         the signing account, from an environment variable or a keystore file
    transactions sign locally, send, wait for the receipt
    deploy       deploy token, timelock, governor and registry, and wire their roles
    governance   propose a ratification, vote, queue, execute, list proposals
    registry     read-only client of PolicyRegistry (what the gateway uses)
    embedded     an in-process eth-tester chain with funded accounts
    demo         the embedded chain with the contracts deployed and a bundle ratified
    cli          the ``agora gov`` command group
"""
