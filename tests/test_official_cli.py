"""The SCAIL-2 README's command lines, as our README writes them, run by bash (each official flag on its own:
tests/test_official_flags.py).

The blocks under "## Official command lines" in README.md are run as they are written (in a folder holding the
files they name, `/path/to/` pointing at a folder of real files, `scailflow` from this environment, a local server
speaking Gemini's API behind GEMINI_BASE_URL). Without a checkpoint the only complaint of each generate line is the
checkpoint; with `--model tiny-random` in place of `--model SCAIL-14B` each writes its video.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scailflow.media import probe_video, read_image, write_image
from tests.support.gemini import CAPTION, PROMPT, FakeGemini, text_reply
from tests.support.official import DATA, env_with_scailflow, errors

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[str]:
    """The ```bash blocks of README.md's "Official command lines" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Official command lines\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def bash(block: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def still(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_image(dst, read_image(src))  # .jpg names are written as JPEG, like the official examples


def video(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def make_inputs(cwd: Path) -> Path:
    """Every file the README's lines name: examples/... under cwd, /path/to/... under cwd/path/to."""
    a, c, d, e = (DATA / n for n in "ACDE")
    for name in ("001",):
        still(a / "ref.png", cwd / f"examples/{name}/ref.jpg")
        still(a / "ref_mask.png", cwd / f"examples/{name}/ref_mask.jpg")
        video(a / "rendered_v2.mp4", cwd / f"examples/{name}/rendered_v2.mp4")
        video(a / "rendered_mask_v2.mp4", cwd / f"examples/{name}/rendered_mask_v2.mp4")
    rep = cwd / "examples/replace_001"
    still(e / "ref.png", rep / "ref.png")
    still(e / "ref_mask.png", rep / "ref_mask.png")
    video(e / "rendered_v2.mp4", rep / "rendered_v2.mp4")
    video(e / "replace_mask.mp4", rep / "replace_mask.mp4")
    multi = cwd / "examples/animation_003_multi_ref"
    still(c / "ref.png", multi / "ref.png")
    still(c / "ref_mask.png", multi / "ref_mask.jpg")
    video(c / "rendered_v2.mp4", multi / "rendered_v2.mp4")
    video(c / "rendered_mask_v2.mp4", multi / "rendered_mask_v2.mp4")
    for (img, msk), name in zip(
        [
            (d / "add_ref_0.png", d / "add_ref_mask_0.png"),
            (d / "add_ref_1.png", d / "add_ref_mask_1.png"),
            (c / "add_ref_0.png", c / "add_ref_mask_0.png"),
        ],
        ("background", "character_1", "character_0"),
    ):
        still(img, multi / f"{name}.png")
        still(msk, multi / f"{name}_mask.png")
    path_to = cwd / "path" / "to"
    still(e / "ref.png", path_to / "ref.png")
    still(e / "ref_mask.png", path_to / "ref_mask.png")
    video(e / "rendered_v2.mp4", path_to / "driving.mp4")
    video(e / "replace_mask.mp4", path_to / "replace_mask.mp4")
    return path_to


@pytest.fixture
def gemini(monkeypatch):
    fake = FakeGemini()
    yield fake
    fake.close()


def test_readme_section_holds_the_official_lines():
    blocks = readme_blocks()
    programs = [re.search(r"scailflow (\w+)", b).group(1) for b in blocks]
    assert programs == ["convert", "prompt", "generate", "generate", "generate", "generate", "generate"]
    assert all("--model SCAIL-14B" in b for b in blocks[2:])


@pytest.mark.slow
@pytest.mark.integration
def test_official_readme_command_lines(tmp_path, gemini):
    """Every README line as written: prompt -> enhanced_prompt.txt -> the replacement line reads it with $(cat ...);
    each generate line reads and checks all its files, then stops at the one thing missing: the checkpoint."""
    path_to = make_inputs(tmp_path)
    env = env_with_scailflow(GEMINI_BASE_URL=gemini.url, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    convert, prompt, *generate = (b.replace("/path/to/", f"{path_to}/") for b in readme_blocks())

    r = bash(convert, tmp_path, env)
    assert r.returncode == 2 and errors(r) == [f"error: training checkpoint not found: {path_to}/SCAIL-2"], r.stderr

    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    r = bash(prompt, tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == PROMPT and (tmp_path / "enhanced_prompt.txt").read_text().strip() == PROMPT
    assert (tmp_path / "source_caption.txt").read_text().strip() == CAPTION
    assert "packaged examples" in r.stderr  # no prompt_examples.txt here
    assert gemini.requests[0]["headers"]["x-goog-api-key"] == "your_api_key"  # the README's export

    for block in generate:
        r = bash(block, tmp_path, env)
        assert r.returncode == 2, r.stderr
        assert errors(r) == [f"error: SCAIL-2 DiT file not found: {path_to}/SCAIL-2.safetensors"], r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.integration
def test_official_convert_line_converts(tmp_path, conformance):
    """The convert line with the training checkpoint where it names it."""
    import torch
    from safetensors.torch import load_file

    from tests.test_scail_checkpoint import official_to_training

    sd = load_file(str(conformance / "tiny_scail2_state_dict.safetensors"))
    ckpt = tmp_path / "path/to/SCAIL-2/model/1/fsdp2_rank_0000_checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"module": official_to_training(sd)}, ckpt)
    convert = readme_blocks()[0].replace("/path/to/", f"{tmp_path}/path/to/")
    r = bash(convert, tmp_path, env_with_scailflow())
    assert r.returncode == 0, r.stderr
    back = load_file(str(tmp_path / "path/to/SCAIL-2.safetensors"))
    assert set(back) == set(sd) and all(torch.equal(back[k], v) for k, v in sd.items())


@pytest.mark.integration
@pytest.mark.slow
def test_official_readme_lines_write_videos_with_the_tiny_model(tmp_path):
    """--model tiny-random in place of --model SCAIL-14B (and one sampling step, to keep this short): the
    animation and multi-reference lines write their videos at the official target, oriented like their references
    (a 896x512 VAE decode on a CPU is what takes the time). The LoRA line names its missing LoRA file."""
    path_to = make_inputs(tmp_path)
    env = env_with_scailflow()
    _, _, _, animation, _, lora, multi = (
        b.replace("/path/to/", f"{path_to}/").replace("--model SCAIL-14B", "--model tiny-random")
        for b in readme_blocks()
    )
    for block, out, (w, h) in [
        (animation, "output.mp4", (896, 512)),  # 170x130 reference: landscape
        (multi, "output_multi_ref.mp4", (512, 896)),  # 130x170: portrait, the target swaps
    ]:
        r = bash(block.rstrip() + " --sample_steps 1\n", tmp_path, env)
        assert r.returncode == 0, r.stderr[-3000:]
        info = probe_video(tmp_path / out)
        assert (info.width, info.height, info.frames) == (w, h, 5)
        record = json.loads((tmp_path / (out + ".json")).read_text())
        assert record["frames_out"] == 5 and "noise" in record["model"]
    assert len(json.loads((tmp_path / "output_multi_ref.mp4.json").read_text())["additional_refs"]) == 3
    r = bash(lora, tmp_path, env)  # LoRAs load on the tiny model too (tests/test_scail_lora.py); this file is absent
    assert r.returncode == 2 and len(errors(r)) == 1 and errors(r)[0].startswith("error: LoRA file not found: ")
