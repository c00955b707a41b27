"""The decision log as a transparency log: Merkle tree, signed checkpoints, proofs, witnesses."""
