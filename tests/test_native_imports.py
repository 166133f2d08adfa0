"""The pose and masks stages import mediapipe from two threads at once (issue 16, point 10): in fresh processes, many
times, never a `_DeadlockError` or a half-initialised module; and a failed import leaves nothing behind for a retry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

# both stages' mediapipe paths from two threads, one starting `delay` seconds after the other, as the flow's task
# threads do (the pose stage first is the order that used to deadlock)
RACE = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from scailflow.flows.demo import astronaut
    from scailflow.masks.segmenters import MediapipeSegmenter
    from scailflow.pose.mediapipe_pose import MediaPipePose

    delay, pose_first = float(sys.argv[1]), sys.argv[2] == "pose"
    frame = astronaut(96)
    errors, found = [], {}

    def pose():
        found["pose"] = MediaPipePose(video=True)(np.stack([frame, frame]))

    def masks():
        found["masks"] = MediapipeSegmenter().foreground(frame)

    def guarded(fn):
        try:
            fn()
        except BaseException as e:
            errors.append(f"{type(e).__name__}: {e}")

    first, second = (pose, masks) if pose_first else (masks, pose)
    threads = [threading.Thread(target=guarded, args=(f,)) for f in (first, second)]
    threads[0].start()
    time.sleep(delay)
    threads[1].start()
    [t.join() for t in threads]
    if errors:
        print("; ".join(errors))
        sys.exit(1)
    assert len(found["pose"]) == 2 and found["masks"].shape == (96, 96) and found["masks"].any()
    print("ok")
    """
)
CASES = [(d, "pose") for d in (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)] + [(0.0, "masks"), (0.01, "masks")]


def _one_process(case: tuple[float, str]) -> tuple[int, str]:
    delay, first = case
    r = subprocess.run([sys.executable, "-c", RACE, str(delay), first], capture_output=True, text=True, timeout=300)
    return r.returncode, f"{first} first, {delay} s: " + (r.stdout + r.stderr)[-1500:]


@pytest.mark.integration
def test_stages_import_mediapipe_concurrently_in_fresh_processes():
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_one_process, CASES))
    failures = [out for code, out in results if code != 0]
    assert not failures, f"{len(failures)} of {len(CASES)} fresh processes failed: {failures[0]}"


def test_a_failed_import_leaves_nothing_half_initialised(tmp_path, monkeypatch):
    from scailflow.native import import_native, preload

    pkg = tmp_path / "flakypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import first, second\n")
    (pkg / "first.py").write_text("VALUE = 1\n")
    flag = tmp_path / "fail-once"
    flag.write_text("")
    (pkg / "second.py").write_text(
        "import pathlib\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "if flag.exists():\n"
        "    flag.unlink()\n"
        "    raise ImportError('native library not ready')\n"
        "VALUE = 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="not ready"):
        import_native("flakypkg")
    assert not [m for m in sys.modules if m.startswith("flakypkg")]  # nothing half-imported stays behind
    mod = import_native("flakypkg")  # the retry starts clean and gets a whole module
    assert mod.first.VALUE == 1 and mod.second.VALUE == 2
    assert preload(["flakypkg", "no_such_module_here"]) == ["flakypkg"]
    for m in [m for m in sys.modules if m.startswith("flakypkg")]:
        del sys.modules[m]
