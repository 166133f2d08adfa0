"""Lazy package exports (PEP 562): `from scailflow.masks import make_masks` works, while importing
`scailflow.masks.options` (for the command line) does not load OpenCV, mediapipe, torch or google-genai."""

from __future__ import annotations

import importlib
from typing import Callable


def exports(package: str, table: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable, list[str]]:
    """(__getattr__, __dir__, __all__) for `package`, given {submodule: names it exports}."""
    where = {name: sub for sub, names in table.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
