"""`scailflow models list | download NAME`: the weights the presets and backends use (see scail/hub.py)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scailflow.scail.hub import MODELS

    sub = p.add_subparsers(dest="models_command", required=True, metavar="{list,download}")
    sub.add_parser("list", help="what is in the Hugging Face cache, and where")
    d = sub.add_parser("download", help="fetch a model's files (resumable; sizes and hashes checked)")
    d.add_argument("name", choices=sorted(MODELS))
    d.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")


def size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def run(args) -> int:
    from scailflow.scail import hub

    if args.models_command == "list":
        for name, spec in hub.MODELS.items():
            snap, count, nbytes = hub.local_state(name)
            where = f"{count} file(s), {size(nbytes)} in {snap}" if snap else "not downloaded"
            print(f"{name:16} {spec.repo}: {where}\n{'':16} {spec.use}")
        return 0
    paths = hub.download(args.name, args.revision)
    total = sum(p.stat().st_size for p in paths)
    print(f"{args.name}: {len(paths)} file(s), {size(total)}, sizes and hashes match the hub's")
    for p in paths:
        print(f"  {p}")
    return 0
