"""Prompt enhancer against a real HTTP server on 127.0.0.1 that speaks Gemini's generateContent REST API."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import logging
import pickle
import random
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scailflow.errors import InputError
from scailflow.media import write_image, write_video
from scailflow.options import from_flags, validated
from scailflow.prompts import (
    AnswerCheckError,
    GeminiError,
    GeminiRequestError,
    GeminiUnavailableError,
    MissingKeyError,
    cli,
    enhance_prompt,
    is_transient,
    prompt_cache_key,
    resolve_api_key,
    sample_frame_indices,
    sampling,
)
from scailflow.prompts.enhance import GeminiAccess
from scailflow.prompts.gemini import Backoff
from scailflow.prompts.options import PromptOptions
from scailflow.prompts.templates import DEFAULT_EXAMPLES, load_examples, prompt_problem
from tests.support.gemini import CAPTION, KEY, MODEL, PATH_RE, PROMPT, FakeGemini, error_reply, text_reply

N_VIDEO = 12
INSTRUCTION = "replace the man in the blue jacket with the person in the image"


def parts(request: dict) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(mime type, bytes) of each inline image and the text parts of a recorded request."""
    (content,) = request["body"]["contents"]
    images, texts = [], []
    for part in content["parts"]:
        if "inlineData" in part:
            blob = part["inlineData"]
            mime = blob.get("mimeType") or blob.get("mime_type")
            images.append((mime, base64.urlsafe_b64decode(blob["data"])))
        elif "text" in part:
            texts.append(part["text"])
    return images, texts


def mean_grey(jpeg: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L")).mean())


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-frame 64x64 video whose frame i is flat grey 20*i, and a 40x48 reference image."""
    root = tmp_path_factory.mktemp("media")
    frames = np.stack([np.full((64, 64, 3), 20 * i, np.uint8) for i in range(N_VIDEO)])
    video = write_video(root / "driving.mp4", frames, fps=8)
    yy, xx = np.mgrid[0:48, 0:40]
    image = write_image(root / "ref.png", np.stack([xx * 6, yy * 5, np.full_like(xx, 128)], -1).astype(np.uint8))
    return video, image


@pytest.fixture
def gemini(monkeypatch):
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GEMINI_BASE_URL",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_API_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeGemini()
    yield fake
    fake.close()


ACCESS = {f.name for f in dataclasses.fields(GeminiAccess)}


def run(media, fake, tmp_path, instruction=INSTRUCTION, **kw):
    """enhance_prompt on the shared media against `fake`, fast backoff, outputs under tmp_path/out. Keywords naming
    PromptOptions fields make the options (checked as a command's flags are: InputError), GeminiAccess's the access."""
    video, image = media
    kw = (
        dict(
            api_key=KEY,
            base_url=fake.url,
            num_frames=4,
            backoff_base_s=0.001,
            output=tmp_path / "out" / "prompt.txt",
            caption_out=tmp_path / "out" / "caption.txt",
        )
        | kw
    )
    fields = {k: kw.pop(k) for k in list(kw) if k in PromptOptions.model_fields}
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}
    opts = validated(PromptOptions, {"instruction": instruction, **fields})
    access = GeminiAccess(**{k: kw.pop(k) for k in list(kw) if k in ACCESS})
    return enhance_prompt(video, image, opts, access=access, **kw)


def files_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


# ---- sampling -------------------------------------------------------------------------------------------


def test_sample_frame_indices_spec_cases():
    assert sample_frame_indices(12, 1) == [6]
    assert sample_frame_indices(11, 1) == [5]
    assert sample_frame_indices(12, 12) == list(range(12))
    assert sample_frame_indices(5, 9) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(12, 4) == [0, 4, 7, 11]
    assert sample_frame_indices(100, 8) == [round(i * 99 / 7) for i in range(8)]
    assert sample_frame_indices(1, 8) == [0]
    for bad in ((0, 4), (10, 0), (10, -1)):
        with pytest.raises(InputError):
            sample_frame_indices(*bad)


@given(st.integers(1, 5000), st.integers(2, 64))
def test_sample_frame_indices_properties(n_total, n):
    idx = sample_frame_indices(n_total, n)
    assert len(idx) == min(n, n_total)
    assert idx == sorted(set(idx))
    assert idx[0] == 0 and idx[-1] == n_total - 1


def test_frame_count_mismatch_resamples_over_decoded_frames(media, monkeypatch):
    video, _ = media
    real = sampling.probe_video
    monkeypatch.setattr(sampling, "probe_video", lambda p: dataclasses.replace(real(p), frames=20))
    indices, frames = sampling.sample_video_frames(video, 4)
    assert indices == [0, 4, 7, 11]  # over the 12 frames that decode, not the 20 the container claimed
    assert [f.mean() for f in frames] == pytest.approx([0, 80, 140, 220], abs=8)


def test_large_pictures_are_shrunk_before_upload():
    jpeg = sampling.jpeg_bytes(np.zeros((1000, 2000, 3), np.uint8))
    assert Image.open(io.BytesIO(jpeg)).size == (sampling.MAX_SIDE, sampling.MAX_SIDE // 2)


# ---- the two calls ------------------------------------------------------------------------------------


def test_two_calls_with_right_parts_and_files_written(media, gemini, tmp_path):
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    result = run(media, gemini, tmp_path)

    assert (result.prompt, result.caption, result.cached, result.calls) == (PROMPT, CAPTION, False, 2)
    assert (tmp_path / "out" / "prompt.txt").read_text() == PROMPT + "\n"
    assert (tmp_path / "out" / "caption.txt").read_text() == CAPTION + "\n"
    assert len(gemini.requests) == 2
    for req in gemini.requests:
        assert PATH_RE.match(req["path"]).group("model") == MODEL
        assert req["body"]["generationConfig"]["temperature"] == pytest.approx(0.4)
        assert req["headers"].get("x-goog-api-key") == KEY  # the key travels in a header, never in the URL
        assert KEY not in req["path"]

    images, texts = parts(gemini.requests[0])
    assert [m for m, _ in images] == ["image/jpeg"] * 4
    assert all(data[:2] == b"\xff\xd8" for _, data in images)
    # frames 0, 4, 7, 11 of a video whose frame i is grey 20*i, in order
    assert [mean_grey(d) for _, d in images] == pytest.approx([0, 80, 140, 220], abs=8)
    assert len(texts) == 1 and "frames sampled evenly" in texts[0]

    images, texts = parts(gemini.requests[1])
    assert len(images) == 1 and images[0][0] == "image/jpeg"
    assert Image.open(io.BytesIO(images[0][1])).size == (40, 48)
    text = "\n".join(texts)
    assert INSTRUCTION in text and CAPTION in text
    assert "copper hair" in text  # from the shipped examples file
    assert "takes the place of" in text  # replacement template


def test_animation_template_and_custom_examples(media, gemini, tmp_path):
    examples = tmp_path / "examples.txt"
    examples.write_text("A robot made of brass gears tap dances on a marble stage.\n\nSecond example text.\n")
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    run(
        media,
        gemini,
        tmp_path,
        mode="animation",
        examples=examples,
        max_example_chars=70,
        num_frames=1,
        instruction="make the character in the image dance like the video, in the image's own setting",
    )
    images, _ = parts(gemini.requests[0])
    assert len(images) == 1 and mean_grey(images[0][1]) == pytest.approx(120, abs=8)  # middle frame, index 6
    text = "\n".join(parts(gemini.requests[1])[1])
    assert "performs the motion" in text and "takes the place of" not in text
    assert "brass gears" in text and "Second example" not in text  # cut to 70 characters
    assert "image's own setting" in text


# ---- failures -----------------------------------------------------------------------------------------


def test_503_then_200_is_retried(media, gemini, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="scailflow.prompts")
    gemini.script = [error_reply(503, "UNAVAILABLE", "model overloaded"), text_reply(CAPTION), text_reply(PROMPT)]
    result = run(media, gemini, tmp_path)
    assert result.prompt == PROMPT and result.calls == 3 and len(gemini.requests) == 3
    assert parts(gemini.requests[0])[0] and len(parts(gemini.requests[1])[0]) == 4  # same caption call repeated
    assert "503" in caplog.text and "retry 1/4" in caplog.text


def test_429_and_timeout_are_retried(media, gemini, tmp_path):
    gemini.script = [
        error_reply(429, "RESOURCE_EXHAUSTED", "quota"),
        ("sleep", 1.5, text_reply(CAPTION)),
        text_reply(CAPTION),
        text_reply(PROMPT),
    ]
    result = run(media, gemini, tmp_path, timeout_s=0.4)
    assert result.prompt == PROMPT and result.calls == 4


def test_transient_failures_exhausted(media, gemini, tmp_path):
    gemini.script = [error_reply(500, "INTERNAL", "boom")] * 3
    with pytest.raises(GeminiUnavailableError) as info:
        run(media, gemini, tmp_path, max_retries=2)
    assert len(gemini.requests) == 3 and is_transient(info.value)
    assert "after 3 attempts" in str(info.value) and "HTTP 500" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_400_fails_at_once_with_api_message_and_key_redacted(media, gemini, tmp_path):
    gemini.script = [error_reply(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}")]
    with pytest.raises(GeminiRequestError) as info:
        run(media, gemini, tmp_path)
    err = info.value
    assert len(gemini.requests) == 1
    assert isinstance(err, InputError) and isinstance(err, GeminiError) and not is_transient(err)
    assert "400" in str(err) and "API key not valid: ***" in str(err) and KEY not in str(err)
    assert err.__cause__ is None and err.__context__ is None  # the SDK error holding the raw body is dropped
    again = pickle.loads(pickle.dumps(err))  # Prefect ships task exceptions between processes
    assert type(again) is GeminiRequestError and str(again) == str(err)
    assert not (tmp_path / "out").exists()


def test_key_absent_from_logs_files_and_errors(media, gemini, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    echo = f"request from key {KEY}"
    gemini.script = [error_reply(503, "UNAVAILABLE", echo), text_reply(CAPTION), text_reply(PROMPT)]
    run(media, gemini, tmp_path, cache_dir=tmp_path / "cache")
    gemini.script = [error_reply(403, "PERMISSION_DENIED", echo)]
    with pytest.raises(GeminiRequestError) as info:
        run(media, gemini, tmp_path, instruction="another instruction", cache_dir=tmp_path / "cache")
    assert "***" in caplog.text and "***" in str(info.value)
    assert KEY not in caplog.text
    assert KEY not in str(info.value) and KEY not in repr(info.value.args)
    assert list((tmp_path / "cache").glob("*.json")) and KEY not in files_text(tmp_path)
    assert KEY not in prompt_cache_key(*media, INSTRUCTION, None, MODEL, "replacement")


def test_connection_refused_is_retried_then_unavailable(media, gemini, tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(GeminiUnavailableError, match="after 3 attempts") as info:
        run(media, gemini, tmp_path, base_url=f"http://127.0.0.1:{port}", max_retries=2)
    assert is_transient(info.value)


def test_non_json_answer_fails_without_retry(media, gemini, tmp_path):
    gemini.script = [(200, "<html>gateway login page</html>")]
    with pytest.raises(GeminiError, match="gateway login page") as info:
        run(media, gemini, tmp_path)
    assert len(gemini.requests) == 1 and not is_transient(info.value)


def test_backoff_is_exponential_with_full_jitter():
    backoff = Backoff(base_s=0.5, cap_s=3.0, rng=random.Random(0))
    for attempt, bound in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= bound and max(delays) > 0.8 * bound


def test_blocked_answer_is_asked_again_then_fails(media, gemini, tmp_path):
    blocked = (200, {"promptFeedback": {"blockReason": "SAFETY"}})
    gemini.script = [blocked, blocked]
    with pytest.raises(AnswerCheckError, match="blocked") as info:
        run(media, gemini, tmp_path)
    assert len(gemini.requests) == 2 and "caption" in str(info.value)


def test_bad_answer_is_asked_again_once(media, gemini, tmp_path):
    bad = PROMPT.replace("A tall woman", "The man is replaced by a tall woman")
    gemini.script = [text_reply(CAPTION), text_reply(bad), text_reply(PROMPT)]
    result = run(media, gemini, tmp_path)
    assert result.prompt == PROMPT and result.calls == 3
    retry_text = "\n".join(parts(gemini.requests[2])[1])
    assert "rejected" in retry_text and "replaced" in retry_text


def test_bad_answer_twice_fails_clearly(media, gemini, tmp_path):
    gemini.script = [text_reply(""), text_reply(CAPTION), text_reply("Too short."), text_reply("Still short.")]
    with pytest.raises(AnswerCheckError, match=r"2 words, outside 90-140") as info:
        run(media, gemini, tmp_path)
    assert len(gemini.requests) == 4 and not is_transient(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_key_and_bad_input_make_no_call(media, gemini, tmp_path):
    video, image = media
    with pytest.raises(MissingKeyError):
        run(media, gemini, tmp_path, api_key=None)
    bad = [
        dict(instruction="  "),
        dict(mode="dance"),
        dict(num_frames=0),
        dict(temperature=3.0),
        dict(examples=tmp_path / "missing.txt"),
        dict(max_example_chars=-1),
    ]
    for kw in bad:
        with pytest.raises(InputError):
            run(media, gemini, tmp_path, **kw)
    access = GeminiAccess(api_key=KEY, base_url=gemini.url)
    with pytest.raises(InputError, match="video"):
        enhance_prompt(tmp_path / "none.mp4", image, PromptOptions(instruction=INSTRUCTION), access=access)
    not_video = tmp_path / "text.mp4"
    not_video.write_text("not a video")
    with pytest.raises(InputError, match="text.mp4"):
        enhance_prompt(not_video, image, PromptOptions(instruction=INSTRUCTION), access=access)
    assert gemini.requests == []


def test_key_and_base_url_from_environment(media, gemini, tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "other-key")
    assert resolve_api_key() == "other-key"
    monkeypatch.setenv("GEMINI_API_KEY", f"  {KEY} ")
    assert resolve_api_key() == KEY and resolve_api_key("explicit") == "explicit"
    monkeypatch.setenv("GEMINI_BASE_URL", gemini.url)
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    assert run(media, gemini, tmp_path, api_key=None, base_url=None).prompt == PROMPT
    assert gemini.requests[0]["headers"]["x-goog-api-key"] == KEY


# ---- cache --------------------------------------------------------------------------------------------


def test_cached_second_run_makes_no_call(media, gemini, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    first = run(media, gemini, tmp_path, cache_dir=cache_dir)
    assert first.calls == 2 and not first.cached

    second = run(media, gemini, tmp_path, cache_dir=cache_dir, api_key=None, output=tmp_path / "again.txt")
    assert (second.prompt, second.caption, second.cached, second.calls) == (PROMPT, CAPTION, True, 0)
    assert second.cache_key == first.cache_key
    assert (tmp_path / "again.txt").read_text() == PROMPT + "\n"
    assert len(gemini.requests) == 2

    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    third = run(media, gemini, tmp_path, cache_dir=cache_dir, instruction="swap the dancer for the image's hero")
    assert not third.cached and third.calls == 2 and len(gemini.requests) == 4


def test_cache_key_follows_content_not_paths(media, tmp_path):
    video, image = media
    base = prompt_cache_key(video, image, INSTRUCTION, None, MODEL, "replacement")
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(video.read_bytes())
    assert prompt_cache_key(moved, image, INSTRUCTION, None, MODEL, "replacement") == base
    examples = tmp_path / "ex.txt"
    examples.write_bytes(DEFAULT_EXAMPLES.read_bytes())
    assert prompt_cache_key(video, image, INSTRUCTION, examples, MODEL, "replacement") == base
    examples.write_text("different examples")
    changed = [
        prompt_cache_key(video, image, INSTRUCTION, examples, MODEL, "replacement"),
        prompt_cache_key(video, image, INSTRUCTION + "!", None, MODEL, "replacement"),
        prompt_cache_key(video, image, INSTRUCTION, None, "gemini-2.5-pro", "replacement"),
        prompt_cache_key(video, image, INSTRUCTION, None, MODEL, "animation"),
        prompt_cache_key(video, image, INSTRUCTION, None, MODEL, "replacement", num_frames=4),
        prompt_cache_key(image, video, INSTRUCTION, None, MODEL, "replacement"),
    ]
    assert len({base, *changed}) == len(changed) + 1


# ---- command ------------------------------------------------------------------------------------------


def test_cli_flags_and_run(media, gemini, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    video, image = media
    args = parser.parse_args(
        [
            "--video",
            str(video),
            "--image",
            str(image),
            "--instruction",
            INSTRUCTION,
            "--mode",
            "replacement",
            "--model",
            MODEL,
            "--temperature",
            "0.3",
            "--num_frames",
            "2",
            "--examples",
            str(DEFAULT_EXAMPLES),
            "--max_example_chars",
            "1000",
            "--output",
            str(tmp_path / "p.txt"),
            "--caption_out",
            str(tmp_path / "c.txt"),
            "--base_url",
            gemini.url,
        ]
    )
    gemini.script = [text_reply(CAPTION), text_reply(PROMPT)]
    assert cli.run(args) == 0
    assert capsys.readouterr().out.strip() == PROMPT
    assert (tmp_path / "p.txt").read_text().strip() == PROMPT and (tmp_path / "c.txt").read_text().strip() == CAPTION
    assert len(parts(gemini.requests[0])[0]) == 2
    assert gemini.requests[0]["body"]["generationConfig"]["temperature"] == pytest.approx(0.3)
    defaults = parser.parse_args(["--video", "v.mp4", "--image", "i.png", "--instruction", "x"])
    opts = from_flags(PromptOptions, defaults)  # the options' flags default to the model's defaults
    assert (
        opts.model,
        opts.temperature,
        opts.num_frames,
        defaults.max_example_chars,
        defaults.mode,
        opts.examples,
    ) == ("gemini-2.5-flash", 0.4, 8, 4000, "replacement", None)


# ---- templates and checks -----------------------------------------------------------------------------


def test_default_examples_pass_the_answer_check():
    paragraphs = load_examples(None, 100_000).split("\n\n")
    assert len(paragraphs) >= 4
    assert all(prompt_problem(p) is None for p in paragraphs)
    assert len(load_examples(None, 4000)) <= 4000


@pytest.mark.parametrize(
    "text, problem",
    [
        (PROMPT, None),
        ("", "empty"),
        ("word " * 89, "89 words"),
        ("word " * 141, "141 words"),
        (PROMPT + " She is swapped in.", "swapped"),
        (PROMPT.replace("A tall woman", "The person in the image, a tall woman,"), "the image"),
        (PROMPT.replace("A tall woman", "Following the instruction, a tall woman"), "instruction"),
        (" ".join(["Женщина идёт по парку"] * 25), "English"),
    ],
)
def test_prompt_problem(text, problem):
    found = prompt_problem(text)
    assert found is None if problem is None else problem in found
