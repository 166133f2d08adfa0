#!/usr/bin/env bash
# On the GPU machine: install every wheel that has arrived under .whl/*/ (bench/gpu_wheels.sh's parts, or any folder of wheels carried beside them; a warm
# machine keeps earlier calls' parts), joining split wheels, into /tmp/site, then scailflow itself (no network, no
# build isolation: the image's setuptools builds it). Idempotent; prints what is still missing.
#   source bench/gpu_install.sh      (exports PYTHONPATH=/tmp/site)
set -u
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE" /tmp/whl-joined
for first in .whl/*/*.whl.piece00; do
  [ -e "$first" ] || continue
  name=$(basename "$first" .piece00)
  want=$(ls .whl/*/"$name".piece* 2>/dev/null | wc -l)
  # all pieces present? piece numbers must run 00..N-1 without a gap
  last=$(ls .whl/*/"$name".piece* | sed 's/.*piece//' | sort -n | tail -1)
  if [ "$((10#$last + 1))" -eq "$want" ]; then
    cat $(ls .whl/*/"$name".piece* | awk -F.piece '{print $NF" "$0}' | sort -n | cut -d' ' -f2) \
      > /tmp/whl-joined/"$name"
  else
    echo "gpu_install: $name still missing pieces ($want of $((10#$last + 1)) seen)"
  fi
done
shopt -s nullglob  # no joined wheels yet: no literal '*.whl' for pip to refuse (seen 2026-12-07)
wheels=(.whl/*/*.whl /tmp/whl-joined/*.whl)
shopt -u nullglob
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "${wheels[@]}" 2>&1 | grep -v "^WARNING: Target directory" | tail -5
export PYTHONPATH="$SITE"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" . \
  2>&1 | grep -v "^WARNING: Target directory" | tail -5
export PATH="$SITE/bin:$PATH"
python3 - <<'PYEOF'
import importlib
missing = []
for m in ("scailflow.cli", "diffusers", "transformers", "prefect", "av", "imageio_ffmpeg", "mediapipe", "cv2", "onnxruntime"):
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001
        missing.append(f"{m} ({e.__class__.__name__}: {str(e)[:80]})")
print("gpu_install: importable except:", missing or "none")
PYEOF
