"""Adapters: the agent's ports implemented against the real platform."""
