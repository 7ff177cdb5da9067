"""Errors shown to the user as one line with exit code 2 (sim.cli reports them)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line use (reported like bad scenario input)."""
