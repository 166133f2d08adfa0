"""Errors the masks stage raises for input a user must fix (each prints as one line)."""

from __future__ import annotations

from scailflow.errors import InputError


class NoPersonError(InputError):
    """No person was found where at least one is needed (reference image, driving video, extra reference)."""


class TooManyPersonsError(InputError):
    """More people to colour than the palette has colours."""
