#!/usr/bin/env bash
# Wheelhouse for the lent GPU machine: everything `scailflow generate/run/batch` imports beyond what its image has
# (torch 2.11 + CUDA, triton; no network there), for its python3 (CPython 3.12, manylinux x86_64), in parts under
# 59 MiB so that each part fits one device call (64 MiB with the working tree).
#
#   bench/gpu_wheels.sh [OUT=/tmp/wheels]
#
# Resolves the project's own dependency list (pyproject.toml) for the target with `pip install --dry-run --report`
# (metadata only), leaves out what the image provides or cannot use (torch/torchvision/triton/CUDA wheels, jax and
# jaxlib: mediapipe's pose and segmentation tasks do not import them; sam2: a source-only build), downloads the rest
# as binary wheels, then splits them into OUT/part1, part2, ... and prints each part's size.
#
# On the device (one part per call, a warm machine keeps earlier calls' ignored files):
#   cp -r /tmp/wheels/partN .whl/partN            (here; .whl/ is git-ignored), carry [".whl/partN"]
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/partN/*.whl
#   ... then, with every part installed:  export PYTHONPATH=/tmp/site:$PWD
#   and the project itself: python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
set -euo pipefail
OUT=${1:-/tmp/wheels}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
PART_MIB=${PART_MIB:-59}
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
# the image's own (or unusable there); matched on the normalised distribution name. imageio-ffmpeg: tests only (the
# product writes through PyAV); opencv-contrib-python: the image's opencv-python-headless provides cv2
SKIP='^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|jax|jaxlib|jax-cuda.*|sam2|setuptools|pip|wheel|imageio-ffmpeg|opencv-contrib-python|numpy|scipy)$'
# on the image too, but at versions the project cannot use: transformers 5.17 (pinned ~=5.23 here); mediapipe needs
# protobuf < 5; huggingface_hub 1.33 (transformers 5.25 wants >= 2.4), seen on the H100 machine 2026-12-07. numpy
# stays the image's (2.x): mediapipe 0.10.21 declares numpy < 2 but runs on numpy 2 (the masks tests pass here on
# numpy 2.3.5), and numpy 1.26 would break the image's scipy / scikit-image (built for numpy 2)
FORCE='^(transformers|protobuf|huggingface[-_]hub)$'

mkdir -p "$OUT/all"
reqs=$("$PY" - "$HERE/pyproject.toml" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
skip = re.compile(r"^(torch|torchvision|jax|jaxlib|sam2)\b")
print("\n".join(d for d in deps if not skip.match(d)))
EOF
)
echo "$reqs" > "$OUT/requirements.txt"
# accelerate / diffusers name torch: resolve against empty stand-in wheels of the image's torch and torchvision, so
# that pip neither fetches 2 GB of CUDA wheels nor resolves their pins
mkdir -p "$OUT/standin"
"$PY" - "$OUT/standin" <<'PYEOF'
import sys, zipfile
for name, version in (("torch", "2.11.0+standin"), ("torchvision", "0.26.0+standin")):
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(f"{sys.argv[1]}/{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: stand-in\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
PYEOF
printf 'torch==2.11.0+standin\ntorchvision==0.26.0+standin\n' > "$OUT/constraints.txt"
"$PY" -m pip install --dry-run --ignore-installed --quiet --report "$OUT/report.json" --target "$OUT/.dry" \
  "${TARGET[@]}" --find-links "$OUT/standin" -r "$OUT/requirements.txt" -c "$OUT/constraints.txt"
"$PY" - "$OUT/report.json" "$SKIP" "$FORCE" "$HERE/bench/gpu_image_packages.txt" > "$OUT/pins.txt" <<'EOF'
import json, re, sys
report, skip, force = json.load(open(sys.argv[1])), re.compile(sys.argv[2]), re.compile(sys.argv[3])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
image = {norm(line.strip()) for line in open(sys.argv[4]) if line.strip() and not line.startswith("#")}
for item in report["install"]:
    name = norm(item["metadata"]["name"])
    if skip.match(name) or (name in image and not force.match(name)):
        print(f"left out: {name}", file=sys.stderr)
    else:
        print(f"{name}=={item['metadata']['version']}")
EOF
echo "resolved $(wc -l < "$OUT/pins.txt") distributions (torch & co. left to the image)"
"$PY" -m pip download --quiet --no-deps "${TARGET[@]}" -d "$OUT/all" -r "$OUT/pins.txt"

# split into parts under PART_MIB, in the order a device session needs them: first what bench/write_release.py and
# `scailflow generate` import, then the Prefect flow, then mediapipe (pose/masks; with protobuf < 5).
# Within a group: largest first, first fit. A wheel over the limit travels as byte pieces NAME.whl.piece00, 01...
# that bench/gpu_install.sh joins again.
"$PY" - "$OUT" "$PART_MIB" <<'PYEOF'
import os, re, shutil, sys
from pathlib import Path
out, limit = Path(sys.argv[1]), int(sys.argv[2]) * 2**20
GROUPS = [
    ("generate", r"^(diffusers|transformers|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|av|"
                 r"shtab|importlib[-_]metadata|kernels|huggingface[-_]hub|httpx2|httpcore2|truststore)-"),
    ("mediapipe", r"^(mediapipe|protobuf|sounddevice|cffi|pycparser)-"),
    ("flow", r"."),
]
pieces = out / "pieces"
shutil.rmtree(pieces, ignore_errors=True); pieces.mkdir()
items = []
for w in (out / "all").glob("*.whl"):
    if w.stat().st_size <= limit:
        items.append(w); continue
    data, n, step = w.read_bytes(), 0, limit // 2
    for i in range(0, len(data), step):
        p = pieces / f"{w.name}.piece{n:02d}"
        p.write_bytes(data[i : i + step]); items.append(p); n += 1
    print(f"{w.name}: {len(data) / 2**20:.1f} MiB, over one part: {n} pieces")
grouped = {g: [] for g, _ in GROUPS}
for w in items:
    grouped[next(g for g, pat in GROUPS if re.match(pat, w.name, re.I))].append(w)
for d in out.glob("part*"):
    shutil.rmtree(d)
k, total = 0, 0
for g in ("generate", "flow", "mediapipe"):
    parts, sizes = [], []
    for w in sorted(grouped[g], key=lambda p: -p.stat().st_size):
        s = w.stat().st_size
        for i, used in enumerate(sizes):
            if used + s <= limit:
                parts[i].append(w); sizes[i] += s
                break
        else:
            parts.append([w]); sizes.append(s)
    for ws, s in zip(parts, sizes):
        k += 1; total += s
        d = out / f"part{k}"
        d.mkdir()
        for w in ws:
            os.link(w, d / w.name)
        print(f"part{k} ({g}): {len(ws)} files, {s / 2**20:.1f} MiB: "
              + " ".join(sorted(re.split(r"-\d", w.name)[0] for w in ws))[:300])
print(f"total {total / 2**20:.1f} MiB in {k} parts under {out}")
PYEOF
