"""Time-to-video through the product's own commands on a GPU machine, as a user runs them (issue 23).

    python bench/bench_run_gpu.py --release DIR [--clip FOLDER] [--only STEPS] [--size 896x512] [--frames 81]
                                  [--out DIR]

Each step is a subprocess of `scailflow` with the README's flags, reading the release folder from disk (write one of
random weights with bench/write_release.py, or pass --write-release):

  generate-fast, generate-comfy, generate-quality   cold `scailflow generate --preset P`: wall time, broken down by
                                                    the output record's `timings` (load, read, text, reference,
                                                    driving, denoise with its first step, decode, write) and the
                                                    rest (imports, process start)
  generate-fast-2nd                                 the same again: a second cold process (compile cache warm)
  generate-fast-cap, generate-quality-cap           under a GPU allocator cap (--cap-gb, default 24) with
                                                    --offload block --vram_budget_gb (--cap-budget)
  run                                               `scailflow run FOLDER` through the Prefect flow
  batch                                             `scailflow batch pipelines.yaml` over 3 folders: per-clip warm time

For every step: GPU busy fraction (nvidia-smi / NVML sampled every 0.2 s), host peak RSS of the process tree, exit
status and the end of its output. A step that cannot run (a missing package, a failure) is recorded as such and the
next one runs. Writes OUT/run_gpu.json and OUT/run_gpu.md (a table with machine and date).

--clip FOLDER: a raw folder (ref.jpg|png, driving.mp4: real footage); its video is cut to --frames frames for each
step (the batch takes 3 consecutive pieces). Without it a synthetic clip is made and the result says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ALL_STEPS = (
    "generate-fast",
    "generate-comfy",
    "generate-quality",
    "generate-fast-2nd",
    "generate-fast-cap",
    "generate-quality-cap",
    "run",
    "batch",
)
TIMING_KEYS = ("load", "read", "text", "reference", "driving", "denoise", "decode", "write")


# ------------------------------------------------------------------------------------------------ sampling
class Sampler:
    """GPU utilisation and host RSS of a process tree, sampled in a thread every `period` seconds."""

    def __init__(self, period: float = 0.2):
        self.period = period
        self.util: list[float] = []
        self.gpu_mem: list[float] = []
        self.rss_peak = 0
        self.pid: int | None = None
        self._stop = threading.Event()
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
        except Exception:  # noqa: BLE001 - no NVML: nvidia-smi, else nothing
            self._nvml = None
        self.gpu_source = "nvml" if self._nvml else ("nvidia-smi" if shutil.which("nvidia-smi") else None)

    def _gpu(self) -> tuple[float, float] | None:
        if self._nvml:
            nv, h = self._nvml
            return float(nv.nvmlDeviceGetUtilizationRates(h).gpu), nv.nvmlDeviceGetMemoryInfo(h).used / 2**30
        if self.gpu_source == "nvidia-smi":
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
            ).stdout.split(",")
            return float(out[0]), float(out[1]) / 1024
        return None

    def _rss(self) -> int:
        if self.pid is None:
            return 0
        try:
            import psutil

            p = psutil.Process(self.pid)
            return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        except Exception:  # noqa: BLE001 - the process ended between samples
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                g = self._gpu()
                if g:
                    self.util.append(g[0])
                    self.gpu_mem.append(g[1])
            except Exception:  # noqa: BLE001
                pass
            self.rss_peak = max(self.rss_peak, self._rss())
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        u = np.array(self.util) if self.util else None
        return {
            "gpu_source": self.gpu_source,
            "gpu_busy_mean": None if u is None else round(float(u.mean()) / 100, 3),
            "gpu_busy_fraction": None if u is None else round(float((u > 0).mean()), 3),
            "gpu_mem_peak_gib": round(max(self.gpu_mem), 1) if self.gpu_mem else None,
            "host_rss_peak_gib": round(self.rss_peak / 2**30, 2) if self.rss_peak else None,
            "samples": len(self.util),
        }


def run_command(argv: list[str], env: dict, timeout: float, cwd: Path | None = None) -> dict:
    """Run one command under a Sampler; its wall time, exit status, output tail and samples."""
    with Sampler() as s:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
            s.pid = proc.pid
            out, _ = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, rc = (proc.communicate()[0] or "") + "\n[bench: timed out]", "timeout"
        except FileNotFoundError as e:
            out, rc = str(e), "missing"
        wall = time.perf_counter() - t0
    return {"argv": argv, "rc": rc, "wall_s": round(wall, 2), "tail": (out or "")[-3000:], **s.summary()}


# ------------------------------------------------------------------------------------------------ inputs
def machine() -> dict:
    info = {"host": platform.node(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except Exception as e:  # noqa: BLE001
        info["torch"] = f"unavailable: {e}"
    return info


def synthetic_clip(folder: Path, frames: int, height: int = 1080, width: int = 1920) -> None:
    """A stand-in when no real footage is given: scikit-image's astronaut swaying over a gradient (said so)."""
    from skimage import data, transform

    from scailflow.media import write_image, write_video

    folder.mkdir(parents=True, exist_ok=True)
    person = (transform.resize(data.astronaut(), (height * 3 // 4, height * 3 // 4)) * 255).astype(np.uint8)
    base = np.tile(np.linspace(40, 200, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    out = []
    for i in range(frames):
        f = base.copy()
        x = width // 2 - person.shape[1] // 2 + int(120 * np.sin(i / 8))
        f[height - person.shape[0] :, x : x + person.shape[1]] = person
        out.append(f)
    write_image(folder / "ref.png", out[0])
    write_video(folder / "driving.mp4", np.stack(out), 30)


def clip_pieces(src: Path, dst: Path, frames: int, pieces: int) -> list[Path]:
    """Raw folders dst/clipNN (ref image + `frames` frames of the driving video, consecutive pieces)."""
    from scailflow.media import read_video, write_video

    ref = next(p for p in sorted(src.iterdir()) if p.stem == "ref" and p.suffix.lower() in (".png", ".jpg", ".webp"))
    video = src / "driving.mp4" if (src / "driving.mp4").is_file() else next(src.glob("*.mp4"))
    all_frames, fps = read_video(video, frames * pieces)
    out = []
    for k in range(pieces):
        part = all_frames[k * frames : (k + 1) * frames]
        if len(part) < frames:  # too short a clip: reuse the start
            part = all_frames[:frames]
        d = dst / f"clip{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ref, d / f"ref{ref.suffix.lower()}")
        write_video(d / "driving.mp4", part, fps)
        (d / "prompt.txt").write_text("a person dancing in a room\n")
        out.append(d)
    return out


def prepared_inputs(folder: Path) -> dict:
    """`scailflow generate` inputs from a raw folder: the driving video as --pose (end-to-end mode) and one blue
    person box as both masks (generation cost does not depend on the masks' content)."""
    from scailflow.media import probe_video, read_image, write_image, write_video

    ref = next(folder.glob("ref.*"))
    img = read_image(ref)
    m = np.zeros_like(img)
    h, w = img.shape[:2]
    m[h // 8 :, w // 4 : 3 * w // 4] = (0, 0, 255)
    write_image(folder / "ref_mask.png", m)
    info = probe_video(folder / "driving.mp4")
    dm = np.zeros((info.frames, info.height, info.width, 3), np.uint8)
    dm[:, info.height // 8 :, info.width // 4 : 3 * info.width // 4] = (0, 0, 255)
    write_video(folder / "mask.mp4", dm, info.fps, lossless=True)
    return {
        "--image": ref,
        "--mask_image": folder / "ref_mask.png",
        "--pose": folder / "driving.mp4",
        "--mask_video": folder / "mask.mp4",
    }


# ------------------------------------------------------------------------------------------------ steps
def scailflow(*args) -> list[str]:
    exe = shutil.which("scailflow")
    return [exe, *map(str, args)] if exe else [sys.executable, "-m", "scailflow.cli", *map(str, args)]


def capped(cap_gb: float, *args) -> list[str]:
    """The same command with the CUDA caching allocator capped at `cap_gb` (a small card, simulated)."""
    code = (
        "import sys, torch; t = torch.cuda.get_device_properties(0).total_memory; "
        f"torch.cuda.set_per_process_memory_fraction(min(1.0, {cap_gb} * 2**30 / t)); "
        "from scailflow.cli import main; sys.argv = ['scailflow'] + sys.argv[1:]; sys.exit(main())"
    )
    return [sys.executable, "-c", code, *map(str, args)]


def breakdown(record: dict, wall: float) -> dict:
    t = record.get("timings", {})
    out = {k: t.get(k) for k in TIMING_KEYS}
    out["first_step"], out["step_median"], out["steps"] = t.get("first_step"), t.get("step_median"), t.get("steps")
    if t.get("first_step") is not None and t.get("step_median") is not None:
        out["warmup"] = round(t["first_step"] - t["step_median"], 2)  # compile (and cuDNN/cuBLAS) warm-up
    known = sum(v for k, v in out.items() if k in TIMING_KEYS and v)
    out["process_other"] = round(wall - known, 2)  # imports, CUDA context, argument parsing, exit
    pc = record.get("process_clock") or {}
    if pc.get("load_start") is not None and pc.get("record") is not None:  # where `other` went
        out["before_load"] = pc["load_start"]  # interpreter, imports, argument parsing, input checks
        if pc.get("generate_start") is not None and t.get("load") is not None:
            out["load_to_generate"] = round(pc["generate_start"] - pc["load_start"] - t["load"], 2)
        out["after_record"] = round(wall - pc["record"], 2)  # the rest of the command and the process's exit
    out["speedups"] = record.get("speedups")
    out["read_ahead"] = record.get("read_ahead")
    return out


def drop_page_cache() -> str:
    """Make the next load read the weights from disk, not from the page cache left by writing them (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "dropped"
    except OSError as e:
        return f"not dropped ({e.__class__.__name__}): the load may read from the page cache"


def step_generate(name: str, a, work: Path, env: dict) -> dict:
    preset = name.split("-")[1]
    folder = work / "clips" / "clip00"
    inputs = prepared_inputs(folder)
    save = work / f"{name}.mp4"
    args = ["generate", *[x for kv in inputs.items() for x in kv], "--save_file", save]
    args += ["--ckpt_dir", a.release, "--scail_path", Path(a.release) / "scail2.safetensors"]
    args += ["--preset", preset, "--target_h", a.height, "--target_w", a.width, "--prompt", "a person dancing"]
    args += ["--base_seed", 1]
    if preset == "quality" and a.quality_steps:
        args += ["--sample_steps", a.quality_steps]
    if name.endswith("-cap"):
        args += ["--offload", "block", "--vram_budget_gb", a.cap_budget]
        argv = capped(a.cap_gb, *args)
    else:
        argv = scailflow(*args)
    cache = drop_page_cache() if a.drop_caches else "kept (no --drop-caches)"
    res = run_command(argv + a.extra, env, a.timeout)
    res["page_cache"] = cache
    rec_path = Path(str(save) + ".json")
    if res["rc"] == 0 and rec_path.is_file():
        record = json.loads(rec_path.read_text())
        res["breakdown"] = breakdown(record, res["wall_s"])
        res["frames"] = record.get("frames_out")
    return res


def step_run(a, work: Path, env: dict) -> dict:
    folder = work / "clips" / "clip00"
    args = ["run", folder, "--ckpt_dir", a.release, "--scail_path", Path(a.release) / "scail2.safetensors"]
    args += ["--preset", a.flow_preset, "--target_h", a.height, "--target_w", a.width]
    res = run_command(scailflow(*args) + a.extra, env, a.timeout)
    rec = folder / "scailflow" / "output.mp4.json"
    if rec.is_file():
        record = json.loads(rec.read_text())
        res["breakdown"] = breakdown(record, res["wall_s"])
    run = folder / "scailflow" / "run.json"
    if run.is_file():
        res["stages"] = json.loads(run.read_text()).get("stage_seconds")
    return res


def step_batch(a, work: Path, env: dict) -> dict:
    root = work / "clips"
    pipelines = work / "pipelines.yaml"
    pipelines.write_text(
        "defaults:\n"
        f"  sampling: {{preset: {a.flow_preset}, target_h: {a.height}, target_w: {a.width}}}\n"
        "model:\n"
        f"  ckpt_dir: {a.release}\n"
        f"  scail_path: {Path(a.release) / 'scail2.safetensors'}\n"
        "pipelines:\n"
        f"  - name: bench\n    root: {root}\n"
    )
    for d in root.iterdir():  # cold outputs of `run` would be reused as cached: start clean
        shutil.rmtree(d / "scailflow", ignore_errors=True)
    args = ["batch", pipelines]
    res = run_command(scailflow(*args) + a.extra, env, a.timeout)
    clips = []
    for d in sorted(root.iterdir()):
        rec = d / "scailflow" / "output.mp4.json"
        if rec.is_file():
            r = json.loads(rec.read_text())
            run = d / "scailflow" / "run.json"  # the flow's wall seconds per stage (pose, masks on this host)
            stages = json.loads(run.read_text()).get("stage_seconds") if run.is_file() else None
            clips.append(
                {
                    "clip": d.name,
                    "generate_s": r.get("seconds"),
                    "stages": stages,
                    **breakdown(r, r.get("seconds") or 0),
                }
            )
    res["clips"] = clips
    return res


# ------------------------------------------------------------------------------------------------ report
def other_split(b: dict) -> str:
    """` (before load / between load and generation / after the record)` when the record has a process clock."""
    keys = ("before_load", "load_to_generate", "after_record")
    return f" ({' / '.join(str(b.get(k, '?')) for k in keys)})" if "before_load" in b else ""


def table(results: dict, meta: dict) -> str:
    lines = [
        f"Time-to-video through the commands, {meta['machine'].get('gpu', 'no GPU')}, {meta['date']} "
        f"({meta['size']}, {meta['frames']} frames, clip: {meta['clip']}; weights read from {meta['release']})",
        "",
        "| step | rc | wall s | load | text+ref+driving | denoise (steps, first, median) | decode | write | other |"
        " GPU busy | GPU peak GiB | host RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        b = r.get("breakdown") or {}
        cond = sum(b.get(k) or 0 for k in ("text", "reference", "driving")) if b else None
        den = f"{b.get('denoise')} ({b.get('steps')}, {b.get('first_step')}, {b.get('step_median')})" if b else ""
        lines.append(
            f"| {name} | {r.get('rc')} | {r.get('wall_s', '')} | {b.get('load', '')} | "
            f"{'' if cond is None else round(cond, 2)} | {den} | {b.get('decode', '')} | {b.get('write', '')} | "
            f"{b.get('process_other', '')}{other_split(b)} | {r.get('gpu_busy_mean', '')} | {r.get('gpu_mem_peak_gib', '')} | "
            f"{r.get('host_rss_peak_gib', '')} |"
        )
        for c in r.get("clips", []):
            lines.append(
                f"| &nbsp;&nbsp;{c['clip']} (warm) | | {c.get('generate_s')} | {c.get('load')} | | "
                f"{c.get('denoise')} ({c.get('steps')}, {c.get('first_step')}, {c.get('step_median')}) | "
                f"{c.get('decode')} | {c.get('write')} | | | | |"
            )
            if c.get("stages"):
                lines.append(f"| &nbsp;&nbsp;{c['clip']} stages (s) | | {c['stages']} | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", required=True, help="release folder (bench/write_release.py)")
    ap.add_argument("--write-release", choices=("full", "tiny"), help="write the release folder first if missing")
    ap.add_argument("--clip", type=Path, help="raw folder of real footage: ref.png|jpg + driving.mp4")
    ap.add_argument("--only", default=",".join(ALL_STEPS), help=f"comma-separated steps of: {', '.join(ALL_STEPS)}")
    ap.add_argument("--size", default="896x512", help="WxH of the output")
    ap.add_argument("--frames", type=int, default=81, help="driving frames per clip (81 = one segment)")
    ap.add_argument("--quality-steps", type=int, help="cut the quality preset's 40 steps to fit a device call")
    ap.add_argument("--flow-preset", default="fast", help="preset of `run` and `batch` (default fast)")
    ap.add_argument("--cap-gb", type=float, default=24.0, help="allocator cap of the -cap steps (GiB)")
    ap.add_argument("--cap-budget", type=float, default=14.0, help="--vram_budget_gb of the -cap steps")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before each generate (cold disk)")
    ap.add_argument("--timeout", type=float, default=540, help="seconds per step before it is killed")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_run_gpu"), help="scratch folder (clips, outputs)")
    ap.add_argument("--home", type=Path, help="SCAILFLOW_HOME for the steps (default WORK/home: a cold cache)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results"), help="where JSON + md go")
    ap.add_argument("extra", nargs="*", help="more flags for every command, after --")
    a = ap.parse_args(argv)
    a.width, a.height = (int(v) for v in a.size.lower().split("x"))
    steps = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        ap.error(f"unknown steps: {', '.join(unknown)}")
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "size": a.size,
        "frames": a.frames,
        "steps": steps,
        "quality_steps": a.quality_steps or 40,
        "release": str(a.release),
    }
    if a.write_release and not (Path(a.release) / "scail2.safetensors").is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        import write_release

        t0 = time.perf_counter()
        meta["release_written"] = write_release.write_release(Path(a.release), a.write_release)
        meta["release_written"]["seconds"] = round(time.perf_counter() - t0, 1)
    clips = a.work / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    if a.clip:
        src, meta["clip"] = a.clip, f"{a.clip.name} (real footage)"
    else:
        src, meta["clip"] = a.work / "synthetic", "synthetic 1080p (no --clip given)"
        synthetic_clip(src, a.frames * 3)
    clip_pieces(src, clips, a.frames, 3 if "batch" in steps else 1)
    env = dict(os.environ, SCAILFLOW_HOME=str(a.home or a.work / "home"), PYTHONUNBUFFERED="1")
    results: dict = {}
    for name in steps:
        print(f"[bench] {name} ...", flush=True)
        try:
            if name.startswith("generate-"):
                res = step_generate(name.removesuffix("-2nd"), a, a.work, env)
            elif name == "run":
                res = step_run(a, a.work, env)
            else:
                res = step_batch(a, a.work, env)
        except Exception as e:  # noqa: BLE001 - record it and go on with the next step
            res = {"rc": "error", "error": f"{e.__class__.__name__}: {e}"}
        results[name] = res
        print(f"[bench] {name}: rc {res.get('rc')}, {res.get('wall_s')} s, {res.get('breakdown')}", flush=True)
        if res.get("rc") not in (0, None):
            print(res.get("tail", res.get("error", ""))[-1500:], flush=True)
        (a.out / "run_gpu.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    md = table(results, meta)
    (a.out / "run_gpu.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
