"""How fast the command line answers: `scailflow --help`, `--version` and each command's `--help`, as fresh processes.

    python bench/bench_cli.py [--repeats 7] [--json out.json]

Prints a table (median and best wall seconds per command) and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [
    ["--version"],
    ["--help"],
    ["run", "--help"],
    ["generate", "--help"],
    ["batch", "--help"],
    ["pose", "--help"],
    ["init", "--help"],
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    exe = shutil.which("scailflow") or str(Path(sys.executable).with_name("scailflow"))
    rows = []
    for cmd in COMMANDS:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([exe, *cmd], capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        rows.append(
            {"command": "scailflow " + " ".join(cmd), "median_s": statistics.median(times), "best_s": min(times)}
        )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Command-line start-up, {platform.node()} ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {when}, {args.repeats} runs each",
        "| command | median s | best s |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['best_s']:.2f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": when, "rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
