"""How far `scailflow estimate` is from the truth once this machine has history (issue 25: within 15% from the second
run on): a series of real `scailflow run`s of the tiny-random model on CPU, each at another clip length, size or step
count, in a fresh SCAILFLOW_HOME. Every run's `run.json` records what the history before it predicted for its
generation beside the seconds it took (flows/estimate.predicted_vs_actual); this prints them and the error.

The history is fitted per part of each record's stage clock (DiT: per unit of work; VAE and write: per
megapixel-frame; the rest), each as fixed + per segment + that term, once it holds 3 distinct clips (before: each
part's median rate; flows/estimate.predict_generate); for comparison the same runs are also replayed through the median seconds per unit of
work that the estimate used before. The tiny model on a CPU is not the 14B DiT on a GPU: its seconds are mostly the
VAE's decode and the conditioning (per frame and pixel) against little DiT work; the GPU error is not measured here.
The 2-core VM is shared: the load average before each run is recorded beside it.

    python bench/bench_estimate.py

Writes a table to stdout and bench/results/estimate_cpu.json (machine and date).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scailflow.flows.estimate import HISTORY_RUNS, read_history  # noqa: E402
from tests.support.folders import make_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "estimate_cpu.json"
# (frames, steps, size): three lengths (97 frames gives one 81-frame segment, the tail dropped), two sizes, two step
# counts; the first 7 as the first measurement (2026-12-07), then three more: two of the sizes already seen, one larger
RUNS = [(13, 2, 64), (13, 4, 64), (25, 2, 64), (25, 4, 96), (97, 2, 64), (13, 2, 96), (97, 4, 96)]
RUNS += [(49, 3, 96), (49, 2, 64), (25, 3, 128)]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-estimate-"))
    env = dict(os.environ, SCAILFLOW_HOME=str(root / "home"))
    env.pop("PREFECT_API_URL", None)
    rows = []
    for i, (frames, steps, size) in enumerate(RUNS):
        folder = make_folder(root, f"clip{i}", frames=frames)
        argv = [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"]
        argv += ["--steps", str(steps), "--target_h", str(size), "--target_w", str(size)]
        load = round(os.getloadavg()[0], 2)
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"run {i} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        est = json.loads((folder / "scailflow" / "run.json").read_text()).get("estimate") or {}
        row = {"run": i + 1, "frames": frames, "steps": steps, "size": f"{size}x{size}", "load_before": load, **est}
        rows.append(row)
        print(f"run {i + 1}: {frames} frames, {steps} steps, {size}x{size}, load {load}: {est}", flush=True)
    history = read_history(root / "home")
    for row, run in zip(rows[1:], history.runs[1:]):  # the same runs, predicted as before the fit: median s/unit
        before = [r.seconds / r.units for r in history.runs[: row["run"] - 1]][-HISTORY_RUNS:]
        row["median_model_s"] = round(statistics.median(before) * run.units, 2)
        row["median_model_error"] = round(row["median_model_s"] / run.seconds - 1, 3)
    errors = [abs(r["error"]) for r in rows if r.get("error") is not None]
    baseline = [abs(r["median_model_error"]) for r in rows if "median_model_error" in r]
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()})"
    result = {
        "what": "scailflow run --model tiny-random on CPU: generation seconds predicted from this machine's history "
        "(per part of the stage clock, fixed + per segment + per unit of work or per Mpixel-frame; median_model_*: "
        "the same runs through the earlier median s/unit)",
        "machine": machine,
        "date": str(date.today()),
        "rows": rows,
        "mean_abs_error": round(sum(errors) / len(errors), 3) if errors else None,
        "max_abs_error": round(max(errors), 3) if errors else None,
        "mean_abs_error_runs_2_to_7": _mean([abs(r["error"]) for r in rows[1:7] if r.get("error") is not None]),
        "mean_abs_error_from_run_5": _mean(errors[3:]),  # once the history holds 4 distinct clips
        "median_model_mean_abs_error": _mean(baseline),
        "median_model_mean_abs_error_runs_2_to_7": _mean(baseline[:6]),
        "load_average_1min": {"min": min(r["load_before"] for r in rows), "max": max(r["load_before"] for r in rows)},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| run | clip | load | predicted s | actual s | error | median model s | its error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = f"{r['error']:+.1%}" if r.get("error") is not None else "(no history yet)"
        pred = r.get("predicted_generate_s")
        print(
            f"| {r['run']} | {r['frames']} frames, {r['steps']} steps, {r['size']} | {r['load_before']} | "
            f"{pred if pred else '-'} | {r.get('actual_generate_s')} | {err} | {r.get('median_model_s', '-')} | "
            + (f"{r['median_model_error']:+.1%} |" if "median_model_error" in r else "- |")
        )
    print(f"\n{json.dumps({k: v for k, v in result.items() if k != 'rows'})}")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


if __name__ == "__main__":
    main()
