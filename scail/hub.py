"""Weights found for you: the SCAIL-2 release in the Hugging Face cache, and the files the presets and backends use,
fetched through huggingface_hub (its cache, resumable downloads, progress bars; sizes and hashes checked here).

After the official `hf download zai-org/SCAIL-2`, `scailflow run` needs no --ckpt_dir / --scail_path: the cached
snapshot is the release folder, and its DiT is converted once to SCAILFLOW_HOME/models (atomic, cached per commit).
HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_TOKEN work as they do for huggingface_hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from scailflow.errors import InputError

log = logging.getLogger("scailflow.scail")

RELEASE_REPO = "zai-org/SCAIL-2"


@dataclass(frozen=True)
class Weights:
    repo: str
    files: tuple[str, ...] | None  # None: the whole repository
    use: str  # what it is for, and how scailflow is told


MODELS: dict[str, Weights] = {
    "release": Weights(RELEASE_REPO, None, "SCAIL-2 release (VAE, umt5-xxl, CLIP, DiT): found by `scailflow run`"),
    "lightx2v": Weights(
        "Kijai/WanVideo_comfy",
        ("Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank128_bf16.safetensors",),
        "step/CFG distill LoRA of --preset fast (--lora_path)",
    ),
    "lightx2v-rank64": Weights(
        "Kijai/WanVideo_comfy",
        ("Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",),
        "distill LoRA of --preset comfy (--lora_path, alpha 0.8)",
    ),
    "dpo": Weights(
        "Comfy-Org/SCAIL-2",
        ("loras/wan2.1_SCAIL_2_DPO_lora_bf16.safetensors",),
        "SCAIL-2 DPO LoRA of --preset comfy (--lora_path, alpha 1.0)",
    ),
    "sam2": Weights("facebook/sam2.1-hiera-large", ("sam2.1_hiera_large.pt",), "SAM 2.1 masks (sam2_checkpoint)"),
    "dwpose": Weights(
        "yzd-v/DWPose",
        ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"),
        "pose-driven mode (SCAILFLOW_DWPOSE_DET, SCAILFLOW_DWPOSE_POSE)",
    ),
}


def scailflow_home() -> Path:
    return Path(os.environ.get("SCAILFLOW_HOME", Path.home() / ".scailflow"))


def cached_snapshot(repo: str, revision: str = "main") -> Path | None:
    """The snapshot folder of `repo` in the Hugging Face cache (no network), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def find_release() -> Path | None:
    """The SCAIL-2 release in the cache: a snapshot holding the VAE and the training checkpoint."""
    snap = cached_snapshot(RELEASE_REPO)
    if snap is None or not (snap / "Wan2.1_VAE.pth").is_file():
        return None
    return snap


def converted_dit(release: Path) -> Path:
    """The release's DiT as one safetensors file, converted once per snapshot (SCAILFLOW_HOME/models)."""
    from scailflow.files import atomic_path
    from scailflow.scail.checkpoint import convert_training_checkpoint

    out = scailflow_home() / "models" / f"scail2-{release.name[:12]}-dit.safetensors"
    if out.is_file():
        return out
    log.info("converting the SCAIL-2 DiT of %s once to %s", release, out)
    with atomic_path(out) as tmp:
        convert_training_checkpoint(release, tmp)
    return out


def release_paths() -> tuple[str, str] | None:
    """(ckpt_dir, scail_path) from the cache, converting the DiT the first time; None when not downloaded."""
    release = find_release()
    if release is None:
        return None
    log.info("using the SCAIL-2 release in the Hugging Face cache: %s", release)
    return str(release), str(converted_dit(release))


# ------------------------------------------------------------------------------------------------ list / download
@dataclass
class Remote:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob: str | None  # git blob id (small files)


def remote_files(repo: str, files: tuple[str, ...] | None, revision: str = "main") -> tuple[str, list[Remote]]:
    """The commit and the files (sizes, hashes) the hub lists for `repo`."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    listed = {
        s.rfilename: Remote(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
        for s in info.siblings or []
    }
    if files is None:
        return info.sha, list(listed.values())
    missing = [f for f in files if f not in listed]
    if missing:
        raise InputError(f"{repo} has no {', '.join(missing)}")
    return info.sha, [listed[f] for f in files]


def check_file(path: Path, want: Remote) -> None:
    """The downloaded file has the hub's size and hash (sha256 for LFS files, the git blob id otherwise)."""
    size = path.stat().st_size
    if size != want.size:
        raise InputError(f"{path}: {size} bytes, the hub lists {want.size}: delete it and download again")
    if want.sha256:
        h = hashlib.sha256()
    elif want.blob:
        h = hashlib.sha1(f"blob {size}\0".encode())
    else:
        return
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != (want.sha256 or want.blob):
        raise InputError(f"{path}: its hash differs from the hub's ({want.path}): delete it and download again")


def download(name: str, revision: str = "main") -> list[Path]:
    """Fetch a model's files into the Hugging Face cache (resumed where a download stopped) and check them."""
    from huggingface_hub import hf_hub_download

    spec = MODELS[name]
    commit, files = remote_files(spec.repo, spec.files, revision)
    paths = []
    for remote in files:
        p = Path(hf_hub_download(spec.repo, remote.path, revision=revision))  # the cache then knows the branch
        if p.parent.name != commit and commit not in p.parts:
            raise InputError(f"{spec.repo} changed while downloading (now past {commit[:12]}): run the download again")
        check_file(p, remote)
        paths.append(p)
    return paths


def local_state(name: str) -> tuple[Path | None, int, int]:
    """(snapshot folder or None, files present, bytes present) in the cache, without the network."""
    spec = MODELS[name]
    snap = cached_snapshot(spec.repo)
    if snap is None:
        return None, 0, 0
    if spec.files is None:
        present = [p for p in snap.rglob("*") if p.is_file()]
    else:
        present = [snap / f for f in spec.files if (snap / f).is_file()]
    if not present:
        return None, 0, 0
    return snap, len(present), sum(p.stat().st_size for p in present)
