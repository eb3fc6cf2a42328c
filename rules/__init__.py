"""Parseltongue rules."""
