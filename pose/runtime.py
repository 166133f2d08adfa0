"""Device choice shared by the backends: onnxruntime providers and the torch device."""

from __future__ import annotations

import logging

import torch

from scailflow.errors import InputError
from scailflow.native import import_native

log = logging.getLogger("scailflow.pose")

_WANTED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def onnx_providers(device: str = "auto") -> list[str]:
    """CUDA then CPU execution providers, keeping only those this onnxruntime build offers."""
    ort = import_native("onnxruntime")

    available = set(ort.get_available_providers())
    wanted = ["CPUExecutionProvider"] if device == "cpu" else list(_WANTED_PROVIDERS)
    providers = [p for p in wanted if p in available]
    if device.startswith("cuda") and "CUDAExecutionProvider" not in providers:
        raise InputError(f"device={device} asked for, but onnxruntime has no CUDAExecutionProvider here")
    return providers or ["CPUExecutionProvider"]


GPU_ONNXRUNTIME_HINT = (
    "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (README: DWPose on the GPU)"  # one package, two builds
)


def cpu_fallback_line(device: str, granted: list[str]) -> str | None:
    """The one line to log when `device` "auto" found a CUDA GPU but onnxruntime runs on the CPU (its CPU build,
    or a GPU build that could not load CUDA); None otherwise."""
    if device != "auto" or (granted and granted[0] == "CUDAExecutionProvider") or not torch.cuda.is_available():
        return None
    return (
        "DWPose runs on the CPU although a CUDA GPU is present: this onnxruntime offers no usable "
        f"CUDAExecutionProvider; for the GPU: {GPU_ONNXRUNTIME_HINT}"
    )


def torch_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")
    return torch.device(device)
