"""Pose model weights: configured once (pipelines.yaml `pose:` section, environment, CLI) and checked at start.

Nothing is downloaded. DWPose needs both ONNX files; NLF is optional (without it the DWPose path renders flat
2D limbs); with no DWPose files the embedded mediapipe model is used.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from scailflow.errors import InputError
from scailflow.files import file_sha256

ENV = {"dwpose_det": "SCAILFLOW_DWPOSE_DET", "dwpose_pose": "SCAILFLOW_DWPOSE_POSE", "nlf": "SCAILFLOW_NLF"}
CLI = {"dwpose_det": "--det", "dwpose_pose": "--pose", "nlf": "--nlf"}
EXPECTED = {
    "dwpose_det": ("yolox_l.onnx", "pretrained_weights/DWPose/yolox_l.onnx"),
    "dwpose_pose": ("dw-ll_ucoco_384.onnx", "pretrained_weights/DWPose/dw-ll_ucoco_384.onnx"),
    "nlf": ("nlf_l_multi_0.3.2.torchscript", "pretrained_weights/nlf_l_multi_0.3.2.torchscript"),
}
# Smaller than this is a stub, a failed download or a Git LFS pointer, never a model.
MIN_BYTES = 1024
# (input name, [C, H, W] with None for a free size) and outputs (name, trailing dims) as the real files have them.
DET_INPUT = ("images", (3, None, None))
POSE_INPUT = ("input", (3, 384, 288))
POSE_OUTPUTS = {"simcc_x": (133, 576), "simcc_y": (133, 768)}


def _where(name: str) -> str:
    file, place = EXPECTED[name]
    return f"expected {file}, e.g. at {place}; configure it with {ENV[name]}, pipelines.yaml pose.{name} or {CLI[name]}"


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _onnx_io(path: Path, name: str):
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError / ValidationError subclasses
        raise InputError(
            f"{name} weights {path} are not a readable ONNX model ({e.__class__.__name__}); {_where(name)}"
        ) from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [(v.name, _dims(v)) for v in model.graph.input if v.name not in inits]
    outputs = [(v.name, _dims(v)) for v in model.graph.output]
    return inputs, outputs


def _check_det(path: Path) -> None:
    inputs, outputs = _onnx_io(path, "dwpose_det")
    if len(inputs) != 1 or len(inputs[0][1]) != 4 or inputs[0][1][1] not in (3, None):
        raise InputError(
            f"dwpose_det {path}: expected one image input [N, 3, 640, 640] named "
            f"{DET_INPUT[0]!r}, found {inputs}; {_where('dwpose_det')}"
        )
    h, w = inputs[0][1][2:]
    if (h is not None and h % 32) or (w is not None and w % 32):
        raise InputError(f"dwpose_det {path}: input size {h}x{w} is not a multiple of 32 (YOLOX strides)")
    if not outputs or len(outputs[0][1]) != 3 or outputs[0][1][2] not in (85, None):
        raise InputError(
            f"dwpose_det {path}: expected output [N, anchors, 85] (YOLOX, 80 classes), "
            f"found {outputs}; {_where('dwpose_det')}"
        )


def _check_pose(path: Path) -> None:
    inputs, outputs = _onnx_io(path, "dwpose_pose")
    want = POSE_INPUT[1]
    ok_in = (
        len(inputs) == 1 and len(inputs[0][1]) == 4 and all(d is None or d == e for d, e in zip(inputs[0][1][1:], want))
    )
    if not ok_in:
        raise InputError(
            f"dwpose_pose {path}: expected one input {POSE_INPUT[0]!r} [N, 3, 384, 288], found "
            f"{inputs}; {_where('dwpose_pose')}"
        )
    got = {n: d for n, d in outputs}
    for name, tail in POSE_OUTPUTS.items():
        dims = got.get(name)
        if dims is None or len(dims) != 3 or any(d is not None and d != e for d, e in zip(dims[1:], tail)):
            raise InputError(
                f"dwpose_pose {path}: expected output {name!r} [N, {tail[0]}, {tail[1]}], found "
                f"{outputs}; {_where('dwpose_pose')}"
            )


@dataclass(frozen=True)
class PoseWeights:
    """Paths (and optional sha256 pins) of the pose models; None means not configured."""

    dwpose_det: Path | None = None
    dwpose_pose: Path | None = None
    nlf: Path | None = None
    dwpose_det_sha256: str | None = None
    dwpose_pose_sha256: str | None = None
    nlf_sha256: str | None = None

    def __post_init__(self):
        for name in ENV:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(os.path.expanduser(str(value))) if str(value) else None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PoseWeights:
        """Read SCAILFLOW_DWPOSE_DET, SCAILFLOW_DWPOSE_POSE, SCAILFLOW_NLF (and *_SHA256 pins)."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        for name, var in ENV.items():
            if env.get(var):
                kw[name] = Path(os.path.expanduser(env[var]))
            if env.get(var + "_SHA256"):
                kw[name + "_sha256"] = env[var + "_SHA256"].strip().lower()
        return cls(**kw)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, base_dir: Path | None = None) -> PoseWeights:
        """From a pipelines.yaml / job.yaml mapping: its `pose:` (or `defaults: pose:`) section, or the mapping
        itself, with keys dwpose_det, dwpose_pose, nlf and *_sha256; relative paths are taken from `base_dir`.
        Other keys of the section (align, legacy_mask_colours, ...) are left to the caller."""
        if not config:
            return cls()
        if isinstance(config, Mapping) and "pose" not in config and isinstance(config.get("defaults"), Mapping):
            config = config["defaults"]  # pipelines.yaml keeps job keys under defaults:
        section = config.get("pose", config) if isinstance(config, Mapping) else None
        if not isinstance(section, Mapping):
            raise InputError("pipelines.yaml: the 'pose' section must be a mapping")
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key in known:
            value = section.get(key)
            if value in (None, ""):
                continue
            if key in ENV:
                p = Path(os.path.expanduser(str(value)))
                kw[key] = p if p.is_absolute() or base_dir is None else base_dir / p
            else:
                kw[key] = str(value).strip().lower()
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: Path) -> PoseWeights:
        """Read the `pose:` section of a pipelines.yaml file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise InputError(f"cannot parse {path}: {e}") from None
        if not isinstance(data, Mapping):
            raise InputError(f"{path}: expected a mapping at the top level")
        return cls.from_config(data, base_dir=path.parent)

    def overridden_by(self, other: PoseWeights) -> PoseWeights:
        """A copy where every field set in `other` wins (CLI over config over environment)."""
        changes = {f.name: getattr(other, f.name) for f in fields(self) if getattr(other, f.name) is not None}
        return replace(self, **changes)

    @property
    def has_dwpose(self) -> bool:
        return self.dwpose_det is not None and self.dwpose_pose is not None

    @property
    def backend(self) -> str:
        """dwpose+nlf, dwpose-2d (no NLF: flat limbs), mediapipe+nlf or mediapipe (embedded default)."""
        two_d = "dwpose" if self.has_dwpose else "mediapipe"
        if self.nlf is not None:
            return f"{two_d}+nlf"
        return "dwpose-2d" if self.has_dwpose else "mediapipe"

    def check(self) -> None:
        """Raise InputError naming the first missing or wrong file and where it is expected."""
        if (self.dwpose_det is None) != (self.dwpose_pose is None):
            missing = "dwpose_det" if self.dwpose_det is None else "dwpose_pose"
            raise InputError(f"DWPose needs both ONNX files; {missing} is not configured: {_where(missing)}")
        for name in ENV:
            path = getattr(self, name)
            if path is None:
                continue
            if not path.exists():
                raise InputError(f"{name} weights not found: {path}; {_where(name)}")
            if not path.is_file():
                raise InputError(f"{name} weights {path} is not a file; {_where(name)}")
            size = path.stat().st_size
            if size < MIN_BYTES:
                raise InputError(
                    f"{name} weights {path} is only {size} bytes (a stub or an LFS pointer?); {_where(name)}"
                )
            pin = getattr(self, name + "_sha256")
            if pin and file_sha256(path) != pin:
                raise InputError(f"{name} weights {path} do not match the pinned sha256 {pin}")
        if self.has_dwpose:
            _check_det(self.dwpose_det)
            _check_pose(self.dwpose_pose)
        if self.nlf is not None and not zipfile.is_zipfile(self.nlf):
            raise InputError(f"nlf weights {self.nlf} are not a TorchScript archive; {_where('nlf')}")

    def to_dict(self) -> dict:
        return {
            f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(self)
            if (v := getattr(self, f.name)) is not None
        }
