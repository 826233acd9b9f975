"""Typed errors. Each carries the process exit code the CLI uses and a one-line message naming the fix.

Exit codes (documented in README):
  0 ok · 1 a budget was missed · 2 bad input (recipe, data, model, profile, arguments) ·
  3 a runtime/export/device failure · 130 interrupted.
"""
from __future__ import annotations


class EdgeCompressError(Exception):
    exit_code = 3

    def __init__(self, message: str):
        # One line: the CLI prints exactly this, so a newline would split the message from its fix.
        super().__init__(" ".join(str(message).split()))


class UserInputError(EdgeCompressError):
    """The recipe, data, model directory, profile or arguments are wrong; the user can fix it."""
    exit_code = 2


class RuntimeFailure(EdgeCompressError):
    """An exporter, runtime or device failed on input that passed validation."""
    exit_code = 3

