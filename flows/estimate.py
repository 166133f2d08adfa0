"""Cost before a run: the predicted seconds, GPU-minutes and price of generating a folder.

The work of a generation is counted in DiT floating-point operations: per segment, steps x (2 with CFG) forwards of
   2 * P * tokens + 4 * tokens^2 * dim * layers     (the linear layers, then self-attention)
with tokens = (latent frames + 1) * (H/16) * (W/16) for the video and the reference, plus latent frames * (H/32) *
(W/32) for the pose. At 896x512 and 1280x704 this predicts the measured ratio of seconds per forward within 1%
(bench/results/h200-2026-12-01/dit.json: 5.99 s and 18.13 s eager, predicted 3.01x, measured 3.03x).

The generation's seconds come from, in order:
1. this machine's own history (SCAILFLOW_HOME/runs.jsonl and each take's record), its last runs of the same model
   (and speed-up flags, once it has such runs), which learns the GPU, the speed-ups and the overheads at once. Each
   record's stage clock splits its seconds into PARTS: the DiT's (scaling with the units of work), the VAE's and the
   write's (with the megapixel-frames) and the rest. Once the runs are 3 distinct clips, each part is fitted as
   fixed + per segment + its term (non-negative least squares on the relative error; the terms kept are those that
   predict each run best from the others); before that, each part's median rate. Records without the clock: their
   total on all four terms, or before 3 clips its median seconds per unit of work;
2. else the measured table below (bench/results), for the GPU kind and the speed-up flags.
The preprocessing stages (pose, masks, prompt) are fitted the same way as fixed + per driving frame, or their median.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the released 14B DiT (bench/results/h200-2026-12-01/dit.json: params; Wan 2.1 14B: dim 5120, 40 layers)
PARAMS, DIM, LAYERS = 16_395_544_384, 5120, 40
REF_TOKENS = 48832  # 81 frames at 896x512, where the table was measured
# measured seconds per DiT forward at REF_TOKENS: (gpu kind, setting) -> (seconds, source)
TABLE: dict[tuple[str, str], tuple[float, str]] = {
    ("h200", "eager"): (5.987, "bench/results/h200-2026-12-01/dit.json eager"),
    ("h200", "compile"): (4.621, "bench/results/h200-2026-12-01/dit.json flash3+compile"),
    ("h200", "fp8+compile"): (4.076, "bench/results/h200-2026-12-01/dit.json fp8+flash3+compile"),
    ("h200", "fp8+fp8attn+compile"): (3.530, "bench/results/h200-2026-12-01/presets.json"),
    ("h100", "fp8+compile"): (4.963, "bench/results/presets_quality_h100.json"),
}
H100_OVER_H200 = 4.963 / 4.076  # the one setting measured on both: other H100 settings are scaled from H200's
# per clip besides the DiT (h200 presets.json: VAE decode 3.4 s per 81 frames at 896x512; encoders + VAE encode 1.3 s)
DECODE_S_PER_MPIXEL_FRAME = 3.4 / (81 * 896 * 512 / 1e6)
ENCODE_S = 1.3


def latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def tokens(frames: int, height: int, width: int) -> int:
    t, h, w = latent_frames(frames), height // 16, width // 16
    return (t + 1) * h * w + t * (h // 2) * (w // 2)


def forward_flops(n_tokens: int) -> float:
    return 2.0 * PARAMS * n_tokens + 4.0 * n_tokens**2 * DIM * LAYERS


def work(segments: list[dict], height: int, width: int, steps: int, cfg: bool) -> float:
    """The generation's DiT work in units of one forward at REF_TOKENS."""
    per = sum(forward_flops(tokens(int(s["length"]), height, width)) for s in segments)
    return steps * (2 if cfg else 1) * per / forward_flops(REF_TOKENS)


def setting_of(model) -> str:
    """The table's name for the speed-up flags of ModelOptions."""
    parts = (["fp8"] if model.fp8 else []) + (["fp8attn"] if model.fp8_attention else [])
    return "+".join(parts + ["compile"]) if (model.compile or parts) else "eager"


def table_seconds(gpu: str, setting: str) -> tuple[float, str] | None:
    if (gpu, setting) in TABLE:
        return TABLE[(gpu, setting)]
    if gpu == "h100" and ("h200", setting) in TABLE:
        s, src = TABLE[("h200", setting)]
        return s * H100_OVER_H200, f"{src}, scaled by the H100/H200 ratio of fp8+compile"
    return None


def gpu_kind(device_name: str | None = None) -> str | None:
    name = device_name
    if name is None:
        try:
            import torch

            name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            name = None
    if not name:
        return None
    name = name.lower()
    return "h200" if "h200" in name else "h100" if "h100" in name else None


HISTORY_RUNS = 20  # the last runs of the same model (and speed-up flags, when there are such) that the history uses
MIN_POINTS = 3  # distinct runs before a fit replaces the median: with fewer, a line through them is mostly noise


@dataclass
class Run:
    """One finished generation on this machine: what it computed and the seconds it took, in parts."""

    label: str  # the model (model_label)
    setting: str  # its speed-up flags, as the table names them (setting_of)
    segments: int
    units: float  # DiT work (work())
    mpix: float  # megapixel-frames generated: the VAE's encode and decode and the write scale with them
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)  # PARTS -> s, from the record's stage clock

    def terms(self) -> dict[str, float]:
        return {"fixed": 1.0, "segment": float(self.segments), "work": self.units, "mpix": self.mpix}


# the parts of a generation's seconds (its record's stage clock), each fitted on its own: the term it scales with
# (besides a fixed cost and one per segment). A record without the clock counts all its seconds as the DiT's.
PARTS = {"dit": "work", "vae": "mpix", "rest": None}
CLOCK = {"dit": ("denoise",), "vae": ("driving", "decode", "write")}  # the rest: text, reference, read, the others
GENERATE_TERMS = {"fixed": "s", "segment": "s/segment", "work": "s/unit of work", "mpix": "s/Mpixel-frame"}
STAGE_TERMS = {"fixed": "s", "frame": "s/frame"}


@dataclass
class History:
    """This machine's finished runs: the generations, and the preprocessing stages' seconds."""

    runs: list[Run] = field(default_factory=list)  # oldest first
    stages: dict[str, list[float]] = field(default_factory=dict)  # pose/masks/prompt -> s (stages that ran)
    stage_frames: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # stage -> (frames in, s)

    def like(self, label: str, setting: str | None = None) -> list[Run]:
        """The last runs of this model: of its speed-up flags too when it has such runs, else of any."""
        mine = [r for r in self.runs if r.label == label]
        same = [r for r in mine if r.setting == setting]
        return (same or mine)[-HISTORY_RUNS:]


def fit(points: list[dict[str, float]], seconds: list[float], required: tuple[str, ...] = ()) -> dict[str, float]:
    """Seconds as a sum of non-negative costs per term (fixed, per segment, per unit of work, ...): least squares on
    the relative error. Which terms: of every set that holds `required`, the one whose fit predicts each point best
    from the others (leave-one-out), fewer terms on a tie; no more terms than distinct points. {} for fewer than 2."""
    names = list(points[0]) if points else []
    x = np.array([[p[n] for n in names] for p in points], dtype=float)
    y = np.array(seconds, dtype=float)
    distinct = len({tuple(np.round(row, 9)) for row in x})
    if distinct < 2:
        return {}
    optional = [i for i, n in enumerate(names) if n not in required]
    fixed = [i for i, n in enumerate(names) if n in required]
    candidates = [fixed + [i for k, i in enumerate(optional) if mask >> k & 1] for mask in range(1 << len(optional))]
    candidates = [c for c in candidates if c and len(c) <= distinct]
    best = min(candidates, key=lambda c: (_leave_one_out(x[:, c], y), len(c)))
    return dict(zip([names[i] for i in best], _nonneg_fit(x[:, best], y)))


def _nonneg_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of x @ c ~ y on the relative error, c >= 0: solve, drop the most negative term, solve again."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a, b = x / scale * _weights(y)[:, None], y * _weights(y)
    keep, coef = list(range(x.shape[1])), np.zeros(x.shape[1])
    while keep:
        c = np.linalg.lstsq(a[:, keep], b, rcond=None)[0]
        if (c >= 0).all():
            coef[keep] = c
            break
        keep.pop(int(np.argmin(c)))
    return coef / scale


def _leave_one_out(x: np.ndarray, y: np.ndarray) -> float:
    """The mean relative error of each point predicted from a fit of the others."""
    errs = []
    for k in range(len(y)):
        rest = np.arange(len(y)) != k
        errs.append(abs(x[k] @ _nonneg_fit(x[rest], y[rest]) - y[k]) * _weights(y)[k])
    return float(np.mean(errs))


def _weights(y: np.ndarray) -> np.ndarray:
    """1 / seconds, so that least squares weighs relative errors (seconds near 0 as 1% of the largest)."""
    return 1.0 / np.maximum(y, 0.01 * max(float(y.max()), 1e-9))


def predict_generate(history: History, label: str, setting: str, run: Run) -> tuple[float, str] | None:
    """The generation's seconds from this machine's history (`run`'s seconds unused) and where they come from: per
    part (DiT, VAE, the rest), a fit of the last runs once they are MIN_POINTS distinct clips, else the median of
    the part's seconds per unit of what it scales with; None without a run of this model."""
    mine = history.like(label, setting)
    if not mine:
        return None
    fitting = len({tuple(r.terms().values()) for r in mine}) >= MIN_POINTS
    clocked = all(r.parts for r in mine)  # else the seconds in one, on all the terms (the DiT's without a fit)
    costs: dict[str, float] = {}
    for part, scale in PARTS.items() if clocked else {"all": "work"}.items():
        seconds = [r.parts.get(part, 0.0) if clocked else r.seconds for r in mine]
        if not any(seconds):
            continue
        keep = ("fixed", "segment", scale) if clocked else tuple(GENERATE_TERMS)
        points = [{k: v for k, v in r.terms().items() if k in keep} for r in mine]
        fitted = fit(points, seconds, required=(scale,) if scale else ()) if fitting else {}
        if not fitted:
            key = scale or "fixed"
            fitted = {key: statistics.median(s / r.terms()[key] for s, r in zip(seconds, mine))}
        for term, c in fitted.items():
            costs[term] = costs.get(term, 0.0) + c
    seconds = sum(c * run.terms()[term] for term, c in costs.items())
    source = f"this machine's last {len(mine)} {label} run(s)"
    if fitting:
        source += ", fitted: " + " + ".join(f"{costs[n]:.3g} {u}" for n, u in GENERATE_TERMS.items() if costs.get(n))
    return seconds, source


def predict_stage(history: History, stage: str, frames: int) -> float:
    """A preprocessing stage's seconds: fixed + per frame once it ran on MIN_POINTS clip lengths, else its median
    (0 if it never ran here)."""
    pairs = history.stage_frames.get(stage, [])[-HISTORY_RUNS:]
    fitting = len({f for f, _ in pairs}) >= MIN_POINTS
    costs = fit([{"fixed": 1.0, "frame": float(f)} for f, _ in pairs], [s for _, s in pairs]) if fitting else {}
    if costs:
        return costs.get("fixed", 0.0) + costs.get("frame", 0.0) * frames
    said = history.stages.get(stage, [])[-HISTORY_RUNS:]
    return statistics.median(said) if said else 0.0


def read_history(home: Path | None = None) -> History:
    from scailflow.flows.env import data_dir as scailflow_home

    path = (home or scailflow_home()) / "runs.jsonl"
    hist = History()
    if not path.is_file():
        return hist
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            if entry.get("state") != "Completed" or not entry.get("take"):
                continue
            record = json.loads(Path(entry["take"] + ".json").read_text())
            run = json.loads((Path(entry["out_dir"]) / "run.json").read_text())
            done = run_of(record)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if done.units > 0 and done.seconds > 0:
            hist.runs.append(done)
        for stage, sec in (run.get("stage_seconds") or {}).items():
            if stage != "generate" and run.get("states", {}).get(stage) == "Completed" and sec:
                hist.stages.setdefault(stage, []).append(float(sec))
                hist.stage_frames.setdefault(stage, []).append((int(record.get("frames_in") or 0), float(sec)))
    return hist


def run_of(record: dict) -> Run:
    """A take's record (the mp4's .json) as a Run of the history."""
    s = record["sampling"]
    h, w = record["height"], record["width"]
    seconds = float(record.get("seconds") or 0.0)
    clock = record.get("timings") or {}
    if "denoise" in clock:
        parts = {part: sum(float(clock.get(k) or 0.0) for k in keys) for part, keys in CLOCK.items()}
        parts["rest"] = max(seconds - sum(parts.values()), 0.0)
    else:
        parts = {"dit": seconds}
    return Run(
        _label(record["model"]),
        _setting_of_record(record.get("speedups") or {}),
        len(record["segments"]),
        work(record["segments"], h, w, s["steps"], s["guidance"] > 1.0),
        sum(int(seg["length"]) for seg in record["segments"]) * h * w / 1e6,
        seconds,
        parts,
    )


def _setting_of_record(speedups: dict) -> str:
    """setting_of's name for the speed-ups a take's record says were applied."""
    parts = (["fp8"] if "fp8_linears" in speedups else []) + (
        ["fp8attn"] if speedups.get("fp8_attention") is True else []
    )
    return "+".join(parts + ["compile"]) if ("compile" in speedups or parts) else "eager"


def _label(model_label: str) -> str:
    return model_label.split(" (")[0]  # "tiny-random (untrained ...)" -> "tiny-random"; "SCAIL-2 (file)" -> "SCAIL-2"


def model_label(model) -> str:
    return "tiny-random" if model.model == "tiny-random" else "SCAIL-2"


@dataclass
class Estimate:
    folder: str
    frames: int
    width: int
    height: int
    segments: int
    forwards: int
    stages: dict[str, float]  # predicted seconds per stage (generate included)
    source: str  # where the generation's figure comes from
    gpus: int = 1

    @property
    def seconds(self) -> float:
        return sum(self.stages.values())

    @property
    def gpu_minutes(self) -> float:
        return self.stages["generate"] * self.gpus / 60.0

    def cost(self, usd_per_hour: float) -> float:
        return self.gpu_minutes / 60.0 * usd_per_hour


def estimate_folder(folder, sampling, model, history: History, gpu: str | None = None) -> Estimate:
    """The prediction for one raw folder with these (job.yaml + flag) options."""
    from scailflow.flows.folder import scan_folder
    from scailflow.media import probe_video, read_image
    from scailflow.scail.segments import plan_segments
    from scailflow.scail.sizes import target_size

    raw = scan_folder(folder)
    s = sampling.resolved()
    info = probe_video(raw.driving)
    height, width = target_size(s.target_h, s.target_w, read_image(raw.ref).shape[:2])
    plan = [seg.__dict__ for seg in plan_segments(info.frames, s.segment_frames, s.overlap_frames, s.keep_tail)]
    units = work(plan, height, width, s.steps, s.guidance > 1.0)
    label, setting = model_label(model), setting_of(model)
    pixels = sum(int(seg["length"]) for seg in plan) * height * width / 1e6
    mine = predict_generate(history, label, setting, Run(label, setting, len(plan), units, pixels, 0.0))
    if mine:
        generate, source = mine
    else:
        kind = gpu or gpu_kind()
        row = table_seconds(kind, setting) if kind and label == "SCAIL-2" else None
        if row is None:
            raise LookupError(
                f"no measured figure for {label} on {kind or 'this machine (no H100/H200 found)'} with "
                f"{setting} and no run of it here yet: give --gpu h100|h200, or run once and estimate again"
            )
        generate = row[0] * units + DECODE_S_PER_MPIXEL_FRAME * pixels + ENCODE_S
        source = f"measured table ({row[1]}), {kind.upper()}"
    stages = {k: predict_stage(history, k, info.frames) for k in ("pose", "masks", "prompt")} | {"generate": generate}
    frames_out = sum(int(seg["length"]) - int(seg["history"]) - int(seg["pad"]) for seg in plan)
    gpus = getattr(model, "gpus", None) or 1
    return Estimate(str(raw.root), frames_out, width, height, len(plan), _forwards(plan, s), stages, source, gpus)


def _forwards(plan: list[dict], s) -> int:
    return len(plan) * s.steps * (2 if s.guidance > 1.0 else 1)


def replay_errors(history: History) -> list[tuple[float, float]]:
    """(predicted, actual) generation seconds for every run that had an earlier run of its model: each predicted
    from the runs before it only, as `estimate` would have predicted it then."""
    out = []
    for k, run in enumerate(history.runs):
        before = History(runs=history.runs[:k])
        if found := predict_generate(before, run.label, run.setting, run):
            out.append((found[0], run.seconds))
    return out


def predicted_vs_actual(take: str | None) -> dict | None:
    """For a run's summary: the generation seconds `estimate` predicted for this take from the runs before it (this
    machine's history), beside the seconds it took. None when the take has no record; never raises."""
    try:
        run = run_of(json.loads(Path(str(take) + ".json").read_text()))
        history = read_history()
    except (OSError, ValueError, TypeError, KeyError):
        return None
    found = predict_generate(history, run.label, run.setting, run)
    predicted = round(found[0], 2) if found else None
    return {
        "predicted_generate_s": predicted,
        "actual_generate_s": run.seconds,
        "error": round(predicted / run.seconds - 1, 3) if predicted and run.seconds else None,
        "from_runs": len(history.like(run.label, run.setting)),
    }


REFUSED_EXIT = 3  # over --max-gpu-minutes (run, batch and estimate alike)


def describe(e: Estimate, usd_per_hour: float | None = None) -> str:
    """One folder's prediction as one line: the clip, seconds per stage, GPU-minutes, cost and where it came from."""
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in e.stages.items())
    cost = f", ${e.cost(usd_per_hour):.2f}" if usd_per_hour is not None else ""
    return (
        f"{Path(e.folder).name}: {e.frames} frames {e.width}x{e.height}, {e.segments} segment(s), {e.forwards} "
        f"DiT forwards: {e.seconds:.0f} s ({stages}); {e.gpu_minutes:.1f} GPU-minutes{cost} [{e.source}]"
    )


@dataclass
class Plan:
    """The predictions for the folders of one command, and the lines that say them."""

    estimates: list[Estimate]
    lines: list[str]
    usd_per_hour: float | None = None

    @property
    def gpu_minutes(self) -> float:
        return sum(e.gpu_minutes for e in self.estimates)

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.estimates)

    def total(self) -> str:
        cost = f", ${self.gpu_minutes / 60 * self.usd_per_hour:.2f}" if self.usd_per_hour is not None else ""
        return f"total: {self.seconds:.0f} s, {self.gpu_minutes:.1f} GPU-minutes{cost}"

    def refusal(self, max_gpu_minutes: float | None) -> str | None:
        """The one line that refuses a run over budget, or None within it."""
        if max_gpu_minutes is None or self.gpu_minutes <= max_gpu_minutes:
            return None
        return (
            f"error: predicted {self.gpu_minutes:.1f} GPU-minutes, over --max-gpu-minutes {max_gpu_minutes:g}: "
            "lower --steps, the size or the preset, or raise the budget"
        )


def plan(folders, model, gpu: str | None = None, usd_per_hour: float | None = None, history=None) -> Plan:
    """The predictions for (folder, SamplingOptions) pairs, or (folder, SamplingOptions, SweepOptions) triples for a
    sweep (see `sweep_estimates`). A folder that cannot be predicted (no measured figure, no history) is an
    InputError naming what to give."""
    from scailflow.errors import InputError

    history = read_history() if history is None else history
    estimates, lines = [], []
    for folder, sampling, *sweep in folders:
        try:
            if sweep and sweep[0] is not None:
                found, said = sweep_estimates(folder, sampling, model, sweep[0], history, gpu, usd_per_hour)
            else:
                found = [estimate_folder(folder, sampling, model, history, gpu)]
                said = [describe(found[0], usd_per_hour)]
        except LookupError as exc:
            raise InputError(str(exc)) from None
        estimates += found
        lines += said
    return Plan(estimates, lines, usd_per_hour)


def sweep_estimates(folder, sampling, model, sweep, history: History, gpu=None, usd_per_hour=None):
    """A sweep of one folder: an Estimate per cell (the takes' generation; the shared preprocessing counted once, in
    the first cell) and the lines that say them: the folder and its preprocessing, one line per cell, the total."""
    from scailflow.flows.sweep_options import cell_model, cells, label, split_cell

    values = sweep.values()
    grid = cells(values, sweep.seed_list())
    found = []
    for k, cell in enumerate(grid):
        cell_sampling, _ = split_cell(cell)
        e = estimate_folder(folder, sampling.model_copy(update=cell_sampling), cell_model(model, cell), history, gpu)
        if k:  # pose, masks and prompt run once for every take of the folder
            e.stages = {s: (v if s == "generate" else 0.0) for s, v in e.stages.items()}
        found.append(e)
    first = found[0]
    pre = {s: v for s, v in first.stages.items() if s != "generate"}
    axes = " x ".join([f"{len(v)} {k}" for k, v in values.items()] + [f"{sweep.seeds} seed(s)"])
    lines = [
        f"{Path(first.folder).name}: sweep of {len(grid)} takes ({axes}), {first.frames} frames "
        f"{first.width}x{first.height}, {first.segments} segment(s): preprocessing once {sum(pre.values()):.0f} s ("
        + ", ".join(f"{s} {v:.0f} s" for s, v in pre.items())
        + ")"
    ]
    for cell, e in zip(grid, found):
        cost = f", ${e.cost(usd_per_hour):.2f}" if usd_per_hour is not None else ""
        lines.append(
            f"  {label(cell, values)}: generate {e.stages['generate']:.0f} s, {e.forwards} DiT forwards, "
            f"{e.gpu_minutes:.1f} GPU-minutes{cost}"
        )
    total = Plan(found, [], usd_per_hour).total().removeprefix("total: ")
    lines.append(f"  sweep total: {total} [{first.source}]")
    return found, lines
