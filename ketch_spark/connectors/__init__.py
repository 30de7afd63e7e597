"""Connectors: one interface (discover, sample, find, erase), one module per store."""
