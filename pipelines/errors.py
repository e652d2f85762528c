"""Errors that mean "the user asked for something we cannot do": the CLI prints one line and exits non-zero."""

from __future__ import annotations


class ShipaError(Exception):
    """Base class of expected, user-facing errors (bad input, bad configuration, missing files).

    The message must name what is wrong and where (file, line, resource id, field, key) and must never contain
    personal data.
    """

    exit_code = 2


class InputError(ShipaError):
    """Input data or a path given on the command line cannot be used."""
