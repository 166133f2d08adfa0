"""How far `scailflow estimate` is from the truth once this machine has history (issue 25: within 15% from the second
run on): a series of real `scailflow run`s of the tiny-random model on CPU, each at another clip length, size or step
count, in a fresh SCAILFLOW_HOME. Every run's `run.json` records what the history before it predicted for its
generation beside the seconds it took (flows/estimate.predicted_vs_actual); this prints them and the error.

The tiny model on a CPU is not the 14B DiT on a GPU: its seconds carry more fixed cost per run (VAE, decode, write)
against less DiT work, which the per-unit-of-work history does not model; the GPU error is not measured here.

    python bench/bench_estimate.py

Writes a table to stdout and bench/results/estimate_cpu.json (machine and date).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.folders import make_folder  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "estimate_cpu.json"
# (frames, steps, size): lengths that give 1 and 2 segments, two sizes, two step counts
RUNS = [(13, 2, 64), (13, 4, 64), (25, 2, 64), (25, 4, 96), (97, 2, 64), (13, 2, 96), (97, 4, 96)]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-estimate-"))
    env = dict(os.environ, SCAILFLOW_HOME=str(root / "home"))
    env.pop("PREFECT_API_URL", None)
    rows = []
    for i, (frames, steps, size) in enumerate(RUNS):
        folder = make_folder(root, f"clip{i}", frames=frames)
        argv = [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"]
        argv += ["--steps", str(steps), "--target_h", str(size), "--target_w", str(size)]
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"run {i} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        est = json.loads((folder / "scailflow" / "run.json").read_text()).get("estimate") or {}
        rows.append({"run": i + 1, "frames": frames, "steps": steps, "size": f"{size}x{size}", **est})
        print(f"run {i + 1}: {frames} frames, {steps} steps, {size}x{size}: {est}", flush=True)
    errors = [abs(r["error"]) for r in rows if r.get("error") is not None]
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()})"
    result = {
        "what": "scailflow run --model tiny-random on CPU: generation seconds predicted from this machine's history",
        "machine": machine,
        "date": str(date.today()),
        "rows": rows,
        "mean_abs_error": round(sum(errors) / len(errors), 3) if errors else None,
        "max_abs_error": round(max(errors), 3) if errors else None,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| run | clip | predicted s | actual s | error | from runs |\n|---|---|---|---|---|---|")
    for r in rows:
        err = f"{r['error']:+.1%}" if r.get("error") is not None else "(no history yet)"
        pred = r.get("predicted_generate_s")
        print(
            f"| {r['run']} | {r['frames']} frames, {r['steps']} steps, {r['size']} | {pred if pred else '-'} | "
            f"{r.get('actual_generate_s')} | {err} | {r.get('from_runs', 0)} |"
        )
    print(f"\nmean |error| {result['mean_abs_error']}, max {result['max_abs_error']}; {machine}, {result['date']}")


if __name__ == "__main__":
    main()
