"""Agora on one machine, for trying it: ``agora quickstart`` and its stand-in model.

Not part of the gateway: ``gateway.app`` and ``gateway.serving`` never import it;
``agora quickstart`` and ``agora demo-model`` load it when they run.
"""
