"""The folder-to-video flow on the embedded defaults and the tiny-random model, under prefect_test_harness.

Cache behaviour is asserted on task states (Completed vs Cached), never on timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scailflow.files import write_text_atomic
from scailflow.flows.folder_flow import folder_flow
from scailflow.masks import ALLOWED_COLOURS
from scailflow.media import probe_video, read_image, read_video, write_image
from tests.support.folders import JOB, make_folder

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

TINY = {"model": "tiny-random"}


@pytest.fixture(scope="module", autouse=True)
def harness(prefect_harness):
    """Prefect's test harness, shared by the session (conftest)."""


def run(folder, **kw):
    return folder_flow(str(folder), folder_name=folder.name, model=TINY, **kw)


def pure(frames: np.ndarray) -> bool:
    allowed = {tuple(c) for c in ALLOWED_COLOURS}
    colours = {tuple(c) for c in np.unique(frames.reshape(-1, 3), axis=0)}
    return colours <= allowed


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    folder = make_folder(tmp_path_factory.mktemp("flow"))
    return folder, run(folder)


def test_first_run_writes_every_output(done):
    folder, summary = done
    out = folder / "scailflow"
    assert summary["states"] == {
        "pose": "Completed",
        "masks": "Completed",
        "prompt": "Completed",
        "generate": "Completed",
    }
    for name in (
        "ref.png",
        "ref_mask.png",
        "rendered_v2.mp4",
        "rendered_mask_v2.mp4",
        "prompt.txt",
        "output.mp4",
        "output.mp4.json",
        "run.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "rendered_v2.mp4").read_bytes() == (folder / "driving.mp4").read_bytes()  # end-to-end: a copy
    mask, _ = read_video(out / "rendered_mask_v2.mp4")
    assert mask.shape == (13, 128, 128, 3) and pure(mask)
    assert (mask != 0).any()  # the astronaut was found
    ref_mask = read_image(out / "ref_mask.png")
    assert ref_mask.shape == (128, 128, 3) and pure(ref_mask)
    assert (ref_mask == 255).all(-1).any() and (ref_mask == (0, 0, 255)).all(-1).any()  # blue person on white
    info = probe_video(out / "output.mp4")
    assert (info.width, info.height, info.frames) == (64, 64, 13)
    assert summary["seed"] == 3 and summary["prompt_source"] == "prompt.txt"
    assert not list(out.glob(".*partial*"))


def test_second_run_is_served_from_cache(done):
    folder, first = done
    again = run(folder)
    assert set(again["states"].values()) == {"Cached"}
    assert again["video"] == first["video"]


def test_edited_mask_reruns_only_generation(done):
    folder, _ = done
    out = folder / "scailflow"
    before = (out / "output.mp4").read_bytes()
    mask = read_image(out / "ref_mask.png")
    mask[:16] = 255  # a person's edit: the top rows become "background visible"
    write_image(out / "ref_mask.png", mask)
    summary = run(folder)
    assert summary["states"] == {"pose": "Cached", "masks": "Cached", "prompt": "Cached", "generate": "Completed"}
    assert (read_image(out / "ref_mask.png")[:16] == 255).all()  # the edit was kept, not recomputed
    assert (out / "output.mp4").read_bytes() != before


def test_changed_prompt_reruns_prompt_and_generation(done):
    folder, _ = done
    write_text_atomic(folder / "prompt.txt", "A woman in an orange suit nods slowly.\n")
    summary = run(folder)
    assert summary["states"] == {"pose": "Cached", "masks": "Cached", "prompt": "Completed", "generate": "Completed"}
    assert (folder / "scailflow" / "prompt.txt").read_text().startswith("A woman in an orange suit nods")


def test_deleted_output_is_made_again(done):
    folder, _ = done
    out = folder / "scailflow"
    take = Path(run(folder)["take"])
    (out / "output.mp4").unlink()  # the published copy: put back from its take, nothing to generate
    summary = run(folder)
    assert summary["states"]["generate"] == "Cached" and (out / "output.mp4").read_bytes() == take.read_bytes()
    take.unlink()  # the take itself: generated again
    summary = run(folder)
    assert summary["states"]["generate"] == "Completed" and summary["states"]["masks"] == "Cached"
    assert take.is_file() and (out / "output.mp4").read_bytes() == take.read_bytes()


def test_an_overwritten_output_is_not_served_as_cached(tmp_path):
    """The issue's first reproduction: a served pipeline (fast preset, smaller) rewrote the folder's outputs; the
    next quality run must not answer Cached with the fast video."""
    from scailflow.flows.batch_flow import run_batch

    folder = make_folder(tmp_path, "clip", frames=5)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 2, seed: 3}\n")  # the size comes from each run
    size = {"sampling": {"target_h": 64, "target_w": 64}}
    quality = run(folder, overrides=size)
    first = (folder / "scailflow" / "output.mp4").read_bytes()
    write_text_atomic(
        tmp_path / "pipelines.yaml",
        "model: {model: tiny-random}\npipelines:\n  - name: served\n    folders: [clip]\n"
        "    options: {sampling: {preset: fast, target_h: 32, target_w: 32}}\n",
    )
    results, state = run_batch(str(tmp_path / "pipelines.yaml"))
    assert state == "Completed" and probe_video(folder / "scailflow" / "output.mp4").height == 32
    again = run(folder, overrides=size)
    video = folder / "scailflow" / "output.mp4"
    assert (probe_video(video).width, probe_video(video).height) == (64, 64)  # the quality take, not the fast one
    assert video.read_bytes() == first and again["take"] == quality["take"]
    assert len(list((folder / "scailflow" / "takes").glob("*.mp4"))) == 2  # both takes kept
    # every stage's manifest names what its key produced; a stage whose file changed underneath is run again
    (folder / "scailflow" / "rendered_v2.mp4").write_bytes(b"not the driving video")
    summary = run(folder, overrides=size)
    assert summary["states"]["pose"] == "Completed"
    assert (folder / "scailflow" / "rendered_v2.mp4").read_bytes() == (folder / "driving.mp4").read_bytes()


def test_transient_failure_is_retried(tmp_path, monkeypatch):
    import scailflow.flows.folder_flow as ff
    from scailflow import pose

    calls = {"n": 0}
    real = pose.stage.prepare_driving

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("a transient failure")
        return real(*a, **k)

    monkeypatch.setattr(pose, "prepare_driving", flaky)
    monkeypatch.setattr(ff, "pose_task", ff.pose_task.with_options(retry_delay_seconds=0))
    folder = make_folder(tmp_path, frames=5)
    summary = run(folder)
    assert calls["n"] == 2 and summary["states"]["pose"] == "Completed"
    assert (folder / "scailflow" / "output.mp4").is_file()


def test_bad_input_is_not_retried(tmp_path, monkeypatch):
    import scailflow.flows.folder_flow as ff
    from scailflow import masks
    from scailflow.errors import InputError

    calls = {"n": 0}

    def no_person(*a, **k):
        calls["n"] += 1
        raise masks.NoPersonError("no person found in the reference image ref.png")

    monkeypatch.setattr(masks, "make_masks", no_person)
    monkeypatch.setattr(ff, "masks_task", ff.masks_task.with_options(retry_delay_seconds=0))
    folder = make_folder(tmp_path, frames=5)
    with pytest.raises(InputError, match="no person found"):
        run(folder)
    assert calls["n"] == 1
    # the stages that succeeded keep their outputs valid for the next run
    assert (folder / "scailflow" / "rendered_v2.mp4").is_file() and (folder / "scailflow" / "prompt.txt").is_file()


def test_out_dir_option_and_inputs_untouched(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "elsewhere"
    summary = run(folder, out=str(out))
    assert (out / "output.mp4").is_file() and summary["out_dir"] == str(out)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_pose_driven_mode_uses_the_skeleton_and_its_mask(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    write_text_atomic(folder / "job.yaml", JOB + "driving: pose\n")
    summary = run(folder)
    out = folder / "scailflow"
    assert summary["states"]["pose"] == "Completed"
    skeleton, _ = read_video(out / "rendered_v2.mp4")
    driving, _ = read_video(folder / "driving.mp4")
    assert skeleton.shape == driving.shape and (skeleton.reshape(-1, 3).max(1) == 0).mean() > 0.5  # black ground
    assert summary["files"]["rendered"] == str(out / "rendered_v2.mp4")
    assert summary["files"]["driving_mask"] == str(out / "rendered_mask_v2.mp4")  # the skeleton's flat mask
    mono, _ = read_video(out / "rendered_mask_v2.mp4")
    assert pure(mono) and ((mono == (0, 0, 255)).all(-1)).any()
    assert (out / "segmentation" / "rendered_mask_v2.mp4").is_file()  # the segmentation kept apart
    assert pure(read_image(out / "ref_mask.png")) and summary["files"]["ref_mask"] == str(out / "ref_mask.png")


def test_gemini_prompt_stage_in_the_flow(tmp_path, monkeypatch):
    from tests.support.gemini import CAPTION, KEY, PROMPT, FakeGemini, text_reply

    fake = FakeGemini()
    try:
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
        monkeypatch.setenv("GEMINI_BASE_URL", fake.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        folder = make_folder(tmp_path, frames=5)
        write_text_atomic(folder / "job.yaml", JOB + "instruction: replace the woman with the person in the image\n")
        fake.script = [text_reply(CAPTION), text_reply(PROMPT)]
        summary = run(folder)
        out = folder / "scailflow"
        assert len(fake.requests) == 2 and summary["prompt_source"] == "gemini-2.5-flash"
        assert (out / "prompt.txt").read_text().strip() == PROMPT and (out / "caption.txt").is_file()
        again = run(folder)
        assert again["states"]["prompt"] == "Cached" and len(fake.requests) == 2  # paid for once
        leaked = [p for p in out.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
        assert not leaked
    finally:
        fake.close()


def test_identical_folders_do_not_share_results(tmp_path):
    one = make_folder(tmp_path, "twin", frames=5)
    other = make_folder(tmp_path, "twin2", frames=5)
    first, second = run(one), run(other)
    assert second["states"]["generate"] == "Completed"  # same content, another folder: its own result
    assert first["video"].startswith(str(one)) and second["video"].startswith(str(other))
    assert (other / "scailflow" / "output.mp4").is_file()


def test_speed_options_reach_the_generation_stage(tmp_path):
    import json

    from scailflow.tasks import gpu

    folder = make_folder(tmp_path, frames=5)
    summary = folder_flow(str(folder), folder_name=folder.name, model={"model": "tiny-random", "step_cache": 0.05})
    assert summary["states"]["generate"] == "Completed"
    pipes = [p for k, p in gpu._PIPELINES.items() if json.loads(k)["step_cache"] == 0.05]
    assert pipes and getattr(pipes[0], "speedups", None)


def test_out_of_memory_retries_once_with_block_offload(tmp_path, monkeypatch):
    import torch

    from scailflow import scail

    real = scail.generate.generate
    calls = []

    def oom_once(pipe, *a, **k):
        calls.append(pipe.placement.mode)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(pipe, *a, **k)

    monkeypatch.setattr(scail.generate, "generate", oom_once)
    folder = make_folder(tmp_path, frames=5)
    summary = folder_flow(str(folder), folder_name=folder.name, model={"model": "tiny-random", "vram_budget_gb": 1.0})
    assert len(calls) == 2 and summary["states"]["generate"] == "Completed"
    record = __import__("json").loads((folder / "scailflow" / "run.json").read_text())
    assert record["video"].endswith("output.mp4")
    from scailflow.tasks import gpu

    assert any(
        __import__("json").loads(k)["offload"] == "block" for k in gpu._PIPELINES
    )  # the second try loaded with block offload


def test_mask_preview_shows_the_driving_video_not_the_output(done):
    from scailflow.masks.sheet import _sources

    folder, _ = done
    ref, video = _sources(folder / "scailflow", folder / "scailflow")
    assert video == folder / "driving.mp4"
