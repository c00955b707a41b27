"""Agora: a policy enforcement gateway for AI models."""

__version__ = "0.1.0"
