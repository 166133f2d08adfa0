"""`scailflow export comfyui FOLDER`: continue in ComfyUI from our preprocessing (see flows/comfyui.py)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=("comfyui",), help="comfyui: a workflow for ComfyUI's native SCAIL-2 nodes")
    p.add_argument("folder", help="a folder `scailflow run` has prepared (or its output folder)")
    p.add_argument("--dest", default=None, help="where to write the workflow (default: FOLDER/scailflow/comfyui)")
    p.add_argument(
        "--comfyui-input",
        "--comfyui_input",
        default=None,
        metavar="DIR",
        help="also copy the videos and images the workflow loads into this folder (ComfyUI's input/)",
    )


def run(args) -> int:
    from scailflow.flows.comfyui import export

    done = export(args.folder, args.dest, args.comfyui_input)
    take = done["take"]
    s = take.sampling
    print(f"wrote {done['workflow']} (open it in ComfyUI: drag it onto the window)")
    print(f"wrote {done['api']} (ComfyUI's API form: POST it to /prompt)")
    where = args.comfyui_input or done["workflow"].parent / "input"
    print(
        f"inputs: {len(done['inputs'])} files in {where}"
        + ("" if args.comfyui_input else " (copy them into ComfyUI/input/)")
    )
    loras = ", ".join(f"{n} at {a:g}" for n, a in take.loras) or "none"
    print(
        f"settings: {take.width}x{take.height}, {len(take.segments)} segment(s), {s['steps']} steps, shift {s['shift']:g}, "
        f"CFG {s['guidance']:g}, {s['solver']}, seed {s['seed']}, {'replacement' if take.replace else 'animation'}; "
        f"LoRAs: {loras}"
    )
    return 0
