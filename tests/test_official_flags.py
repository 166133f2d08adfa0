"""The official `generate.py` / `prompt_enhancer.py` flags one by one, through `scailflow generate` and
`scailflow prompt`: each flag's meaning, the automatic output name, the flags that cannot run, the API key never
echoed, the examples file in the working directory, and the multi-GPU line started by torchrun. (The README's whole
command lines: tests/test_official_cli.py; this module is apart from it so that the two run in different pytest-xdist
workers: tests/run keeps a module in one.)
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from scailflow.media import probe_video, read_video
from tests.support.gemini import CAPTION, PROMPT, FakeGemini, error_reply, text_reply
from tests.support.official import DATA, env_with_scailflow, errors, generate_args
from tests.support.processes import cli as run_cli

KEY = "AIzaTEST-official-flag-key-0123456789"


@pytest.fixture
def gemini(monkeypatch):
    fake = FakeGemini()
    yield fake
    fake.close()


cli = functools.partial(run_cli, timeout=300)


def test_official_flags_take_their_meaning():
    """Parsed as `scailflow generate` parses them, into the option models the pipeline is built from."""
    import argparse

    from scailflow.options import from_flags
    from scailflow.scail.cli import add_generate_arguments
    from scailflow.scail.options import ModelOptions, ParallelOptions, SamplingOptions

    p = argparse.ArgumentParser()
    add_generate_arguments(p)
    base = ["--image", "a", "--mask_image", "b", "--pose", "c", "--mask_video", "d"]

    def parse(*extra):
        args = p.parse_args([*base, *extra])
        return (
            args,
            from_flags(SamplingOptions, args),
            from_flags(ModelOptions, args),
            from_flags(ParallelOptions, args),
        )

    args, s, m, par = parse(
        "--model", "scail-14b", "--offload_model", "True", "--t5_cpu", "--segment_len", "41", "--segment_overlap",
        "9", "--sample_solver", "DPM++", "--base_seed", str(2**62), "--additional_image", "x.png",
        "--additional_mask_image", "xm.png", "--scail_config_path", "cfg.json", "--ulysses_size", "4", "--ring_size", "2",
        "--t5_fsdp", "--dit_fsdp",
    )  # fmt: skip
    assert (m.model, m.offload, m.t5_cpu, m.scail_config_path) == ("scail2", "model", True, "cfg.json")
    assert (s.segment_frames, s.overlap_frames, s.solver, s.seed) == (41, 9, "dpm++", 2**62)
    assert (args.additional_ref_image, args.additional_ref_mask_image) == (["x.png"], ["xm.png"])
    assert par.world_size == 8 and len(par.notes()) == 3  # ring attention, T5 and DiT FSDP: one note each
    _, s, m, par = parse("--offload_model", "false")
    assert m.offload == "none" and (s.target_h, s.target_w) == (512, 896) and par.world_size == 1
    with pytest.raises(SystemExit):
        parse("--offload_model", "maybe")


@pytest.mark.integration
def test_save_dir_gets_the_official_automatic_name(tmp_path):
    """No --save_file: SCAIL2_<W>*<H>_<ring_size>_<prompt>_<time>.mp4 in --save_dir; the target as typed, before the
    swap; the other official flags run with it."""
    before = datetime.now().replace(microsecond=0)
    prompt = "a girl / dancing in the rain"
    r = cli(
        "generate", *generate_args(), "--model", "tiny-random", "--prompt", prompt, "--save_dir", tmp_path / "samples",
        "--target_w", 64, "--target_h", 96, "--sample_steps", 1, "--offload_model", "True", "--t5_cpu", "--t5_fsdp",
        "--dit_fsdp", "--ulysses_size", 1, "--ring_size", 1, "--base_seed", 2**40, "--segment_len", 5,
        "--segment_overlap", 1,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (out,) = (tmp_path / "samples").glob("*.mp4")
    m = re.fullmatch(r"SCAIL2_64\*96_1_a_girl___dancing_in_the_rain_(\d{8}_\d{6})\.mp4", out.name)
    assert m and before <= datetime.strptime(m.group(1), "%Y%m%d_%H%M%S") <= datetime.now()
    info = probe_video(out)
    assert (info.width, info.height) == (96, 64)  # landscape reference: the portrait target swapped
    record = json.loads(Path(str(out) + ".json").read_text())
    assert record["seed"] == 2**40 and record["sampling"]["segment_frames"] == 5
    assert "--t5_fsdp" in r.stderr and "--dit_fsdp" in r.stderr  # one note each


@pytest.mark.integration
def test_official_flags_that_cannot_run_say_so_in_one_line(tmp_path):
    cases = [
        (["--txt", "prompts.txt"], "--txt is not implemented"),
        (["--gpus", "2", "--ulysses_size", "4"], "give one GPU count"),
    ]
    for extra, message in cases:
        r = cli("generate", *generate_args(), "--model", "tiny-random", "--save_file", tmp_path / "o.mp4", *extra)
        assert r.returncode == 2 and len(errors(r)) == 1 and message in errors(r)[0], r.stderr
    # started by torchrun with another process count than the flags ask for
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="4")
    r = cli(
        "generate", *generate_args(), "--model", "tiny-random", "--save_file", tmp_path / "o.mp4", "--ulysses_size",
        2, env=env,
    )  # fmt: skip
    assert r.returncode == 2 and errors(r) == [
        "error: 2 GPUs asked for (--gpus, or --ulysses_size x --ring_size) but torchrun started 4 processes"
    ]
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.integration
def test_api_key_flag_is_used_and_never_echoed(tmp_path, gemini):
    """`scailflow prompt --api_key KEY`: the key reaches Gemini, and nothing the user sees or keeps holds it."""
    d = DATA / "A"
    env = env_with_scailflow(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    base = ["prompt", "--video", d / "rendered_v2.mp4", "--image", d / "ref.png", "--instruction", "replace the man"]
    out = tmp_path / "out"
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    r = cli(*base, "--api_key", KEY, "--base_url", gemini.url, "--output", out / "p.txt", "--caption_out",
            out / "c.txt", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert gemini.requests[0]["headers"]["x-goog-api-key"] == KEY
    assert r.stdout.strip() == PROMPT
    # a 400 from the API (a bad key), a typo beside the key, the key given to a command without the flag
    gemini.script = [error_reply(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}")]
    runs = [
        r,
        cli(*base, f"--api_key={KEY}", "--base_url", gemini.url, env=env),
        cli(*base, "--api_key", KEY, "--num_framez", "3", env=env),
        cli("generate", *generate_args(), "--api_key", KEY, env=env),
        cli("generate", *generate_args(), "--api", KEY, env=env),
    ]
    for run in runs[1:]:
        said = [ln for ln in run.stderr.splitlines() if "error:" in ln]  # ours or argparse's ("scailflow: error:")
        assert run.returncode == 2 and len(said) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "***" in runs[3].stderr
    for run in runs:
        assert KEY not in run.stdout + run.stderr
    assert KEY not in "".join(p.read_text() for p in out.rglob("*") if p.is_file())


@pytest.mark.integration
def test_official_examples_file_in_the_working_directory_is_used(tmp_path, gemini):
    """As the official helper: without --examples, ./prompt_examples.txt when there is one."""
    d = DATA / "A"
    env = env_with_scailflow(GEMINI_API_KEY=KEY, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    base = ["prompt", "--video", d / "rendered_v2.mp4", "--image", d / "ref.png", "--instruction", "x"]
    (tmp_path / "prompt_examples.txt").write_text("An ORANGE-MARKER example paragraph about a dancer.\n")
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    r = cli(*base, "--base_url", gemini.url, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert len(gemini.requests) == 2 and "ORANGE-MARKER" in json.dumps(gemini.requests[1]["body"])


@pytest.mark.integration
@pytest.mark.slow
def test_torchrun_started_ulysses_line_writes_the_one_process_video(tmp_path):
    """The official multi-GPU use: torchrun starts N copies of the command with --ulysses_size N. Here 2 processes
    on the CPU (gloo): they split the clip by scailflow's plan and write the one-process video."""
    common = [*generate_args(), "--model", "tiny-random", "--target_h", 64, "--target_w", 96, "--sample_steps", 2]
    common += ["--base_seed", 5]
    one = cli("generate", *common, "--save_file", tmp_path / "one.mp4")
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "scailflow.cli"]
        + ["generate", *map(str, common), "--ulysses_size", "2", "--save_file", str(tmp_path / "two.mp4")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 ranks" in two.stdout
    a, _ = read_video(tmp_path / "one.mp4")
    b, _ = read_video(tmp_path / "two.mp4")
    diff = np.abs(a.astype(int) - b.astype(int))  # same floats up to summation order, then H.264
    # (measured: 94% of the pixels equal, 99.9% within 4 levels; another seed differs by ~100 levels on average)
    assert a.shape == b.shape and (diff == 0).mean() > 0.9 and np.percentile(diff, 99.9) <= 6 and diff.max() <= 24
