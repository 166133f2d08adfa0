"""FlashAttention 3 for Hopper GPUs from the `fa3-fwd` wheel (`pip install "scailflow[hopper]"`): find it, check that
every file that will run is the build we pinned, load it once.

fa3-fwd 0.0.3 is a third-party build of FlashAttention 3's forward pass (bf16 and fp8 e4m3 inputs, sm_90a), compiled
against torch's stable ABI. It is a binary nobody here built, so nothing of it runs before its files match the
sha256 pinned below: the files are located without executing them (`importlib.util.find_spec` of a namespace
package and of a top-level module runs no code), hashed, and only then imported; after the import the loaded
modules must be the files that were hashed. The dist-info RECORD travels with the files, so it proves nothing:
the pins live here.

The wheel's `fa3_fwd_interface` imports `flash_attn_config` (the upstream name) where the wheel ships
`fa3_fwd_config`: the verified config module is registered under that name too (only the backward pass reads it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from scailflow.errors import InputError

log = logging.getLogger("scailflow.scail")

PINNED_VERSION = "0.0.3"
# sha256 of the installed files of fa3-fwd 0.0.3 (cp39-abi3-manylinux_2_24_x86_64; wheel sha256 44d26c6c...b93d)
PINNED_SHA256 = {
    "fa3_fwd._C": "f74cff6d35de49a3df1fe5aed3c82f9bb7695bbf89b51dbba0ac663ae3812ef8",
    "fa3_fwd_interface": "187fd0a048171e1373a45e14d44288fa511dc8899113c6ef38d23f38a9b8d2ef",
    "fa3_fwd_config": "f6ef820700706b52f563bb80ea70abfe64cab6cbe71db723981fcf7d5a865998",
}
INSTALL_HINT = 'pip install "scailflow[hopper]" (Linux x86-64, a Hopper GPU: H100/H200)'


@dataclass
class FA3:
    """The loaded kernel: `flash_attn_func(q, k, v, softmax_scale=..., q_descale=..., ...)` on (B, S, H, D)."""

    flash_attn_func: object
    files: dict[str, str]


_LOADED: dict[str, FA3 | None] = {}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def locate(names=tuple(PINNED_SHA256)) -> dict[str, str] | None:
    """Paths of the pinned modules, found without running any of their code; None when fa3-fwd is not installed."""
    paths: dict[str, str] = {}
    for name in names:
        if "." in name:  # fa3_fwd._C: find the package (a namespace package: no code), then the extension file
            pkg_name, sub = name.split(".", 1)
            pkg = importlib.util.find_spec(pkg_name)
            if pkg is None:
                return None
            if pkg.origin not in (None, "namespace"):  # the pinned build has no __init__.py that could run first
                raise InputError(f"fa3-fwd: {pkg.origin} is not part of the pinned build {PINNED_VERSION}: refusing it")
            found = [
                os.path.join(d, f)
                for d in pkg.submodule_search_locations or []
                for f in sorted(os.listdir(d))
                if f.split(".")[0] == sub and any(f.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
            ]
            if not found:
                return None
            paths[name] = found[0]
        else:
            spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
            if spec is None or not spec.origin:
                return None
            paths[name] = spec.origin
    return paths


def verify(pins: dict[str, str] = PINNED_SHA256) -> dict[str, str] | None:
    """The pinned files' paths when every one matches its sha256; None when not installed; InputError when a file
    differs (a tampered or different build: it is never imported)."""
    paths = locate(tuple(pins))
    if paths is None:
        return None
    for name, want in pins.items():
        got = sha256_file(paths[name])
        if got != want:
            raise InputError(
                f"fa3-fwd: {paths[name]} has sha256 {got[:16]}..., not the pinned build {PINNED_VERSION} "
                f"({want[:16]}...): refusing to load it; reinstall with {INSTALL_HINT}"
            )
    return paths


def load(pins: dict[str, str] = PINNED_SHA256) -> FA3 | None:
    """Verify, then import fa3-fwd (once per process). None when it is not installed or cannot load here (no CUDA
    torch, another platform); InputError when its files are not the pinned build."""
    if "fa3" in _LOADED:
        return _LOADED["fa3"]
    paths = verify(pins)
    fa3 = None
    if paths is not None:
        try:
            config = importlib.import_module("fa3_fwd_config")
            sys.modules.setdefault("flash_attn_config", config)  # the wheel's packaging bug (see the module doc)
            interface = importlib.import_module("fa3_fwd_interface")
        except (ImportError, OSError) as e:
            log.warning("fa3-fwd is installed but does not load here (%s): %s", e.__class__.__name__, e)
        else:
            loaded = {
                "fa3_fwd._C": getattr(sys.modules.get("fa3_fwd._C"), "__file__", None),
                "fa3_fwd_interface": interface.__file__,
                "fa3_fwd_config": config.__file__,
            }
            for name, path in paths.items():
                if loaded.get(name) and os.path.realpath(loaded[name]) != os.path.realpath(path):
                    raise InputError(f"fa3-fwd: {name} was loaded from {loaded[name]}, not the verified {path}")
            fa3 = FA3(interface.flash_attn_func, paths)
            log.info("FlashAttention 3: fa3-fwd %s verified (sha256 of %d files)", PINNED_VERSION, len(paths))
    _LOADED["fa3"] = fa3
    return fa3
