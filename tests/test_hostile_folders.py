"""Folders from strangers and ordinary inputs that used to go wrong (issue 16, points 1-4 and 9): each case through
`scailflow run` / `scailflow batch` as the user runs it, checking what the user sees and that nothing outside the
output was written."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.flows.config import load_job, load_pipelines
from scailflow.media import read_image, read_video, write_image
from tests.support.folders import make_folder
from tests.support.gemini import KEY, FakeGemini, text_reply
from tests.support.processes import cli, one_error


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- 1. code from a folder
EVIL_HYDRA = """# @package _global_
model:
  _target_: builtins.dict
  image_encoder:
    _target_: pathlib.Path.write_text
    _args_:
      - _target_: pathlib.Path
        _args_: [{marker}]
      - written by a folder
"""


def _escape_to(evil: Path) -> str:
    import sam2

    return os.path.relpath(evil, Path(sam2.__file__).parent)  # ../../../.. out of sam2's config directory


@pytest.mark.integration
def test_sam2_config_from_job_yaml_never_reaches_hydra(tmp_path):
    marker = tmp_path / "elsewhere" / "PWNED"
    marker.parent.mkdir()
    evil = marker.parent / "evil.yaml"
    evil.write_text(EVIL_HYDRA.format(marker=marker))
    folder = make_folder(tmp_path, frames=5)
    (folder / "sam2.1_hiera_tiny.pt").write_bytes(os.urandom(256))
    write_text_atomic(
        folder / "job.yaml",
        "sampling: {steps: 1, target_h: 64, target_w: 64}\nmasks:\n  backend: sam2\n"
        f"  sam2_checkpoint: sam2.1_hiera_tiny.pt\n  sam2_config: {_escape_to(evil)}\n",
    )
    before = snapshot(folder)
    r = cli("run", folder, "--model", "tiny-random")
    one_error(r, "job.yaml:5: masks.sam2_config")
    assert not marker.exists()
    assert snapshot(folder) == before and not (folder / "scailflow").exists()  # refused before any work


def test_sam2_loader_takes_only_bundled_config_names(tmp_path):
    from scailflow.masks.segmenters import Sam2VideoSegmenter

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(EVIL_HYDRA.format(marker=marker))
    for config in (_escape_to(evil), str(evil), "configs/sam2.1/../../../x.yaml"):
        with pytest.raises(InputError, match="unknown SAM 2 config"):
            Sam2VideoSegmenter.from_checkpoint(None, config, "cpu")
    assert not marker.exists()


# ------------------------------------------------------------------- 2. a folder reading the operator's files
@pytest.mark.integration
def test_examples_outside_the_folder_never_reach_gemini(tmp_path):
    secret = tmp_path / "operator" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("OPERATOR-SECRET-4242 the database password is hunter2\n")
    folder = make_folder(tmp_path, frames=5)
    write_text_atomic(
        folder / "job.yaml",
        "instruction: replace the astronaut\nsampling: {steps: 1, target_h: 64, target_w: 64}\n"
        f"prompt_enhancer:\n  examples: {secret}\n",
    )
    fake = FakeGemini()
    fake.script = [text_reply("A caption of the clip, long enough.")] + [text_reply("A prompt. " * 20)] * 3
    try:
        env = dict(os.environ, GEMINI_API_KEY=KEY, GEMINI_BASE_URL=fake.url)
        r = cli("run", folder, "--model", "tiny-random", env=env)
    finally:
        fake.close()
    assert not any("OPERATOR-SECRET" in str(q["body"]) for q in fake.requests)
    one_error(r, "job.yaml:4: prompt_enhancer.examples", "outside the folder", "SCAILFLOW_ALLOW_PATHS")


def test_file_options_in_job_yaml_stay_inside_the_folder(tmp_path, monkeypatch):
    folder = make_folder(tmp_path, frames=5)
    (folder / "models").mkdir()
    (folder / "models" / "yolox_l.onnx").write_bytes(b"x")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "nlf.torchscript").write_bytes(b"x")
    os.symlink(tmp_path / "shared" / "nlf.torchscript", folder / "link.torchscript")
    # inside the folder, relative to it: accepted and made absolute
    write_text_atomic(folder / "job.yaml", "pose:\n  dwpose_det: models/yolox_l.onnx\n")
    assert load_job(folder).pose.dwpose_det == str((folder / "models" / "yolox_l.onnx").resolve())
    # `..`, an absolute path, `~` and a symlink leading out: refused, naming file, line and key
    for value, line in (("../shared/nlf.torchscript", 3), (str(tmp_path / "shared/nlf.torchscript"), 3)):
        write_text_atomic(folder / "job.yaml", f"mode: animation\npose:\n  nlf: {value}\n")
        with pytest.raises(InputError, match=f"job.yaml:{line}: pose.nlf: .* is outside the folder"):
            load_job(folder)
    write_text_atomic(folder / "job.yaml", "masks: {sam2_checkpoint: ~/.ssh/id_rsa}\n")
    with pytest.raises(InputError, match="masks.sam2_checkpoint"):
        load_job(folder)
    write_text_atomic(folder / "job.yaml", "pose: {nlf: link.torchscript}\n")
    with pytest.raises(InputError, match="outside the folder"):
        load_job(folder)
    # the operator may allow a directory, or name the file from the command line / pipelines.yaml
    monkeypatch.setenv("SCAILFLOW_ALLOW_PATHS", str(tmp_path / "shared"))
    assert load_job(folder).pose.nlf == str((tmp_path / "shared" / "nlf.torchscript").resolve())
    monkeypatch.delenv("SCAILFLOW_ALLOW_PATHS")
    (folder / "job.yaml").unlink()
    job = load_job(folder, overrides={"pose": {"nlf": str(tmp_path / "shared" / "nlf.torchscript")}})
    assert job.pose.nlf == str(tmp_path / "shared" / "nlf.torchscript")


@pytest.mark.integration
def test_a_folder_file_linking_out_is_refused(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    secret = tmp_path / "secret.txt"
    secret.write_text("OPERATOR-SECRET\n")
    (folder / "prompt.txt").unlink()
    os.symlink(secret, folder / "prompt.txt")
    one_error(cli("run", folder, "--model", "tiny-random"), "prompt.txt", "outside the folder")
    # the default output folder may not lead out of the folder either (our writes would land there)
    (folder / "prompt.txt").unlink()
    (tmp_path / "victim").mkdir()
    os.symlink(tmp_path / "victim", folder / "scailflow")
    one_error(cli("run", folder, "--model", "tiny-random"), "scailflow", "outside the folder")
    assert list((tmp_path / "victim").iterdir()) == []


# --------------------------------------------------------------------------------------------- 3. YAML bombs
BOMB = "\n".join(
    [f"a: &a [{','.join(['lol'] * 9)}]"]
    + [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
)


@pytest.mark.integration
def test_yaml_bomb_in_job_yaml_fails_fast_naming_the_file(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    write_text_atomic(folder / "job.yaml", BOMB + "\n")
    assert len(BOMB.splitlines()) == 9
    r = cli("run", folder, "--model", "tiny-random", memory_gib=3, timeout=120)
    one_error(r, str(folder / "job.yaml"), "expands to more than")


@pytest.mark.integration
def test_yaml_bomb_in_pipelines_yaml_fails_fast_naming_the_file(tmp_path):
    p = tmp_path / "pipelines.yaml"
    write_text_atomic(p, BOMB + "\npipelines:\n  - name: x\n    options: {prompt: *i}\n    root: .\n")
    one_error(cli("batch", p, memory_gib=3, timeout=120), str(p), "expands to more than")


def test_yaml_limits_size_recursion_depth_and_encoding(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("prompt: " + "x" * 300_000 + "\n")
    with pytest.raises(InputError, match="job.yaml: YAML file larger than"):
        load_pipelines(p)
    p.write_text("a: &a [1, *a]\n")  # an alias inside its own anchor
    with pytest.raises(InputError, match="job.yaml:1: an alias refers to the value that contains it"):
        load_pipelines(p)
    p.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError, match="job.yaml"):
        load_pipelines(p)
    p.write_bytes(b"prompt: caf\xe9\n")  # latin-1
    with pytest.raises(InputError, match="job.yaml: YAML file is not UTF-8"):
        load_pipelines(p)
    p.write_text("prompt: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_pipelines(p)


# ------------------------------------------------------------------------ 4. --out inside the input folder
@pytest.mark.integration
@pytest.mark.parametrize("where", ["equal", "inside", "holds"])
def test_out_inside_the_input_folder_is_refused(tmp_path, where):
    folder = make_folder(tmp_path, frames=5)
    out = {"equal": folder, "inside": folder / "results", "holds": tmp_path}[where]
    before = snapshot(folder)
    r = cli("run", folder, "--model", "tiny-random", "--out", out)
    one_error(r, f"output folder {out}")
    assert snapshot(folder) == before


def test_out_under_the_default_output_folder_is_fine(tmp_path):
    from scailflow.flows.folder import output_dir, scan_folder

    folder = make_folder(tmp_path, frames=5)
    raw = scan_folder(folder)
    assert output_dir(raw, folder / "scailflow") == folder / "scailflow"
    assert output_dir(raw, tmp_path / "elsewhere") == tmp_path / "elsewhere"


# --------------------------------------------------------------------------------------- 9. ordinary inputs
def test_exif_orientation_is_applied_to_every_image_read(tmp_path):
    # a portrait phone photo: stored landscape (4:3) with EXIF orientation 6 (rotate 90 degrees clockwise to view)
    stored = np.zeros((60, 80, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)  # red along the stored left edge = the top once turned upright
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "ref.jpg"
    im.save(path, exif=exif, quality=95)
    upright = read_image(path)
    assert upright.shape == (80, 60, 3)  # portrait
    assert upright[:8, :, 0].mean() > 200 and upright[-8:, :, 0].mean() < 60


@pytest.mark.integration
def test_portrait_phone_reference_is_animated_upright(tmp_path, shared_server):
    folder = make_folder(tmp_path, frames=5, size=64)
    still = np.ascontiguousarray(read_image(folder / "ref.png")[:, 8:56])  # a portrait reference, 48x64
    sideways = np.ascontiguousarray(np.rot90(still, 1))  # stored rotated 90 degrees counter-clockwise ...
    im = Image.fromarray(sideways)
    exif = im.getexif()
    exif[0x0112] = 6  # ... and tagged "rotate 90 clockwise to view", as phones do
    (folder / "ref.png").unlink()
    im.save(folder / "ref.jpg", exif=exif, quality=98)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 1, target_h: 64, target_w: 32, seed: 1}\n")
    r = cli("run", folder, "--model", "tiny-random", env=shared_server[1])  # reported to the session's server
    assert r.returncode == 0, r.stderr[-3000:]
    out = folder / "scailflow"
    # the mask is drawn on the upright picture: portrait, like the target (not swapped to landscape)
    assert read_image(out / "ref_mask.png").shape[:2] == (64, 48)
    assert np.abs(read_image(folder / "ref.jpg").astype(int) - still.astype(int)).mean() < 8
    assert read_video(out / "output.mp4")[0].shape[1:3] == (64, 32)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", ["my café (2)", "名前"])
def test_any_folder_name_works(tmp_path, name, shared_server):
    """An accent, spaces and brackets in one name (`café` alone used to fail after the video on every re-run), and a
    name with no ASCII at all (`名前` did too; its artifact key keeps nothing of it)."""
    folder = make_folder(tmp_path, name=name, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 1, target_h: 64, target_w: 64, seed: 1}\n")
    env = shared_server[1]  # the name reaches a real server's flow runs and artifacts, without a temporary API each
    r = cli("run", folder, "--model", "tiny-random", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (folder / "scailflow" / "output.mp4").is_file() and "could not publish" not in r.stderr
    again = cli("run", folder, "--model", "tiny-random", env=env)
    assert again.returncode == 0 and "generate Cached" in again.stdout, again.stderr[-3000:]


def test_artifact_keys_are_valid_and_distinct():
    import re

    from scailflow.flows.artifacts import artifact_key

    names = ["clip", "café", "cafe", "名前", "名字", "a b", "a_b", "a-b", "x" * 80, "x" * 81, "--"]
    keys = [artifact_key(f"/data/{n}") for n in names]
    assert all(re.fullmatch(r"[a-z0-9-]+", k) and len(k) <= 60 for k in keys), keys
    assert len(set(keys)) == len(keys) and keys[0] == "scailflow-clip"


def test_huge_images_are_refused_before_decoding(tmp_path):
    big = tmp_path / "ref.png"
    Image.new("L", (12000, 12000)).save(big, optimize=True)  # a few MB on disk, 432 MB decoded as RGB
    assert big.stat().st_size < 10 << 20
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match=r"ref.png is 12000x12000 \(144 MP\)"):
        read_image(big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - ru < 100_000  # KiB: nothing was decoded


@pytest.mark.integration
def test_huge_reference_in_a_folder_is_one_line(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    (folder / "ref.png").unlink()
    Image.new("L", (12000, 12000)).save(folder / "ref.png")
    one_error(cli("run", folder, "--model", "tiny-random", memory_gib=3), "12000x12000", "downscale")


def test_video_frames_too_large_are_refused(tmp_path):
    import av

    path = tmp_path / "8k.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=16)
        s.width, s.height, s.pix_fmt = 8192, 4320, "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((4320, 8192, 3), np.uint8), format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match="8k.mp4 is 8192x4320"):
        read_video(path)


@pytest.mark.parametrize(
    "yaml_text, line, key",
    [
        ("sampling:\n  segment_frames: 0\n", 2, "sampling.segment_frames"),
        ("sampling:\n  steps: 2\n  seed: 1e23\n", 3, "sampling.seed"),
        ("mode: animation\nsampling: {target_w: 1000000}\n", 2, "sampling.target_w"),
        ("sampling:\n  segment_frames: 21\n  overlap_frames: 21\n", 1, "sampling"),
        ("sampling: {seed: yes}\n", 1, "sampling.seed"),
        ("masks:\n  max_persons: 2\n  replace_index: 3\n", 1, "masks"),
    ],
)
@pytest.mark.integration
def test_job_yaml_values_that_cannot_work_fail_at_load(tmp_path, yaml_text, line, key):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", yaml_text)
    one_error(cli("run", folder, "--model", "tiny-random"), f"job.yaml:{line}: {key}")
    assert not (folder / "scailflow").exists()


@pytest.mark.integration
def test_pipelines_root_without_clips_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    p = tmp_path / "pipelines.yaml"
    write_text_atomic(p, "pipelines:\n  - name: nightly\n    root: empty\n")
    one_error(cli("batch", p), "nothing to run", "empty")


@pytest.mark.integration
def test_one_folder_under_two_spellings_runs_once(tmp_path, shared_server):
    from scailflow.flows.batch_flow import batch_folders

    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 1, target_h: 64, target_w: 64, seed: 1}\n")
    os.symlink(folder, tmp_path / "alias")
    p = tmp_path / "pipelines.yaml"
    write_text_atomic(
        p,
        "model: {model: tiny-random}\npipelines:\n  - name: a\n    folders: [clip, ./clip/, alias]\n"
        "  - name: b\n    folders: [../" + tmp_path.name + "/clip]\n",
    )
    assert len(batch_folders(load_pipelines(p))) == 1
    r = cli("batch", p, env=shared_server[1])
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "1 of 1 folders done" in r.stdout and "FAILED" not in r.stdout


def test_two_folders_writing_to_one_output_are_refused(tmp_path):
    from scailflow.flows.batch_flow import batch_folders

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        make_folder(tmp_path / d, frames=5, size=64)
    p = tmp_path / "pipelines.yaml"
    write_text_atomic(p, "pipelines:\n  - name: x\n    folders: [a/clip, b/clip]\n    out: results\n")
    with pytest.raises(InputError, match="would both write to"):
        batch_folders(load_pipelines(p))


def test_write_image_stays_upright_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", rgb)
    assert (read_image(tmp_path / "x.png") == rgb).all()
