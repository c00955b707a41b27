"""The community's side of governance: ``agora gov`` deploys, proposes, votes, queues, executes.

Modules, one concern each:

    cli          the ``agora gov`` parser; dispatches to commands (web3 loads only then)
    commands     the handlers: connect, act through the library, print the result
    keys         the signing account, from an environment variable or a keystore file
    transactions sign locally, send, wait for the receipt
    deploy       deploy votes, timelock, governor and registry, and wire their roles
    governance   propose a ratification, vote, queue, execute, list proposals
    voting       the voting models (token, membership, quadratic) and their units
    membership   list, admit and remove members under membership voting
    tokens       AGORA amounts

It reads the registry through :mod:`gateway.chain`, like the gateway; the
gateway itself never imports this package.
"""
