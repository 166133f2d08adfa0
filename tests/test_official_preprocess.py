"""What reaches the model equals what the official SCAIL-2 code feeds it, on inputs of odd sizes and aspects.

tests/data/official_preprocess/ holds real input files (odd sizes, portrait and square references, extra references,
a replacement case, two segments) and the tensors the official code computed from them (its README says how). Here
our own readers and conditioning run on the same files: every tensor must match exactly, or to 1e-6 for floats.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from scailflow.scail import generate as generate_module
from scailflow.scail.conditioning import (
    cover_size,
    frames_to_model,
    half_size,
    masks_to_28ch,
    resize_crop,
    still_to_model,
    target_size,
    to_uint8_frames,
)
from scailflow.scail.encoders import clip_pixel_values
from scailflow.scail.generate import GenerateRequest, generate, read_conditioning
from scailflow.scail.loading import load_pipeline
from scailflow.scail.options import ModelOptions, SamplingOptions

DATA = Path(__file__).parent / "data" / "official_preprocess"
CASES = json.loads((DATA / "cases.json").read_text())["cases"]
CLIP_STRIDE = 7


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load(lzma.decompress((DATA / "expected.safetensors.xz").read_bytes()))


def request(name: str, save_file: Path | None = None) -> GenerateRequest:
    case, d = CASES[name], DATA / name
    n_extra = len(case["additional_ref_WxH"])
    return GenerateRequest(
        image=d / "ref.png",
        mask_image=d / "ref_mask.png",
        pose=d / "rendered_v2.mp4",
        mask_video=d / case["mask_video"],
        prompt="a person dancing",
        save_file=save_file or d / "unused.mp4",
        replace=case["replace_flag"],
        additional_ref_images=[d / f"add_ref_{i}.png" for i in range(n_extra)],
        additional_ref_masks=[d / f"add_ref_mask_{i}.png" for i in range(n_extra)],
    )


def close(ours: torch.Tensor, official: torch.Tensor) -> None:
    """Pixels to 1e-6 (the mask latents and uint8 tensors are compared exactly where they are used)."""
    assert ours.shape == official.shape and ours.dtype == official.dtype
    torch.testing.assert_close(ours.cpu(), official, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_conditioning_matches_the_official_code(name, expected):
    """Each step on its own, from the files a user would pass: the swap, the int() cover sizes, the reference and
    extra references (float resize, unclamped), their masks' 28 channels, the driving video resized as uint8 and
    halved, the driving mask's 28 channels, and the CLIP input."""
    case = CASES[name]
    cond, _ = read_conditioning(request(name))
    h, w = target_size(*case["target_hw_as_passed"], cond.ref_image.shape[:2])
    assert [h, w] == case["target_hw_used"]
    for call in case["resize_calls"]:
        assert list(cover_size(*call["input_shape"][2:], *call["target_hw"])) == call["resized_hw_before_crop"]

    ref = still_to_model(cond.ref_image, h, w)
    close(ref, expected[f"{name}.gen.ref_image"])
    assert torch.equal(
        masks_to_28ch(still_to_model(cond.ref_mask, h, w)[:, None]), expected[f"{name}.pipe.ref_mask_28ch"]
    )
    if f"{name}.pipe.clip_in_every{CLIP_STRIDE}" in expected:
        clip = clip_pixel_values(ref[None])[..., ::CLIP_STRIDE, ::CLIP_STRIDE]
        close(clip, expected[f"{name}.pipe.clip_in_every{CLIP_STRIDE}"])
    for i, (img, msk) in enumerate(cond.additional_refs):
        close(still_to_model(img, h, w), expected[f"{name}.gen.add_ref_image.{i}"])
        assert torch.equal(
            masks_to_28ch(still_to_model(msk, h, w)[:, None]), expected[f"{name}.pipe.add_ref_mask_28ch.{i}"]
        )
    if f"{name}.gen.driving_u8" in expected:
        uint8 = resize_crop(torch.from_numpy(cond.driving[:]).permute(0, 3, 1, 2), h, w)
        assert uint8.dtype == torch.uint8 and torch.equal(uint8, expected[f"{name}.gen.driving_u8"])
    for k, (s0, s1) in enumerate(case["segments"]):
        video = frames_to_model(cond.driving[s0:s1], h, w)
        assert video.min() >= -1 and video.max() <= 1  # resized as uint8: never overshoots
        close(half_size(video), expected[f"{name}.pipe.seg{k}.driving_half"])
        masks = masks_to_28ch(frames_to_model(cond.driving_mask[s0:s1], h, w), half=True)
        assert torch.equal(masks, expected[f"{name}.pipe.seg{k}.driving_masks_28ch"])


def test_output_frames_are_truncated_like_the_official_writer(expected):
    frames = to_uint8_frames(expected["output.float_in"])
    assert np.array_equal(frames, expected["output.uint8_expected"].numpy())


class Recorder:
    """Records what the real tiny pipeline hands its VAE encoder, CLIP and DiT, and the frames it writes."""

    def __init__(self, pipe, monkeypatch):
        self.vae_in, self.clip_in, self.dit, self.decoded, self.written = [], [], [], [], []
        encode, decode = pipe.vae.encode, pipe.decode

        def spy_encode(x, *a, **kw):
            self.vae_in.append(x.detach().clone())
            return encode(x, *a, **kw)

        def spy_decode(latents, progress=None):
            out = decode(latents, progress)
            self.decoded.append(out.clone())
            return out

        def spy_write(path, frames, fps, **kw):
            self.written.append(np.array(frames, copy=True))
            return write(path, frames, fps, **kw)

        write = generate_module.write_video
        monkeypatch.setattr(pipe.vae, "encode", spy_encode)
        monkeypatch.setattr(pipe, "decode", spy_decode)
        monkeypatch.setattr(generate_module, "write_video", spy_write)
        pipe.image_encoder.register_forward_pre_hook(
            lambda m, args, kw: self.clip_in.append(kw["pixel_values"].clone()), with_kwargs=True
        )
        pipe.transformer.register_forward_pre_hook(lambda m, args, kw: self.dit.append(dict(kw)), with_kwargs=True)


@pytest.mark.integration  # the whole pipeline end to end: tens of seconds on 2 cores
@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E", "F"])
def test_pipeline_feeds_the_model_what_the_official_code_does(name, expected, tmp_path, monkeypatch):
    """The whole generate path (files in, video out) on the tiny model: the VAE, CLIP and DiT inputs and the frames
    written are the official ones, segment by segment."""
    case = CASES[name]
    (h, w), (seg_len, overlap) = case["target_hw_used"], (case["segment_len"], case["segment_overlap"])
    pipe = load_pipeline(ModelOptions(model="tiny-random", device="cpu"))
    rec = Recorder(pipe, monkeypatch)
    th, tw = case["target_hw_as_passed"]
    opts = SamplingOptions(
        target_h=th, target_w=tw, steps=1, guidance=1.0, seed=0, segment_frames=seg_len, overlap_frames=overlap
    )
    record = generate(pipe, request(name, tmp_path / "out.mp4"), opts)
    assert (record["height"], record["width"]) == (h, w)
    assert record["frames_out"] == case["output_frames"]

    n_extra, n_segments = len(case["additional_ref_WxH"]), len(case["segments"])
    close(rec.vae_in[0][0], expected[f"{name}.gen.ref_image"][:, None])
    for i in range(n_extra):
        close(rec.vae_in[1 + i][0], expected[f"{name}.gen.add_ref_image.{i}"][:, None])
    later = rec.vae_in[1 + n_extra :]
    driving_in = [v for v in later if v.shape[-2:] == (h // 2, w // 2)]
    history_in = [v for v in later if v.shape[-2:] == (h, w)]
    assert len(driving_in) == n_segments and len(history_in) == n_segments - 1
    for k in range(n_segments):
        close(driving_in[k][0], expected[f"{name}.pipe.seg{k}.driving_half"])
    for k, v in enumerate(history_in):  # the previous segment's last decoded frames, handed over in bf16
        assert torch.equal(v[0], rec.decoded[k][:, -overlap:].bfloat16().float())
    if f"{name}.pipe.clip_in_every{CLIP_STRIDE}" in expected:
        close(rec.clip_in[0][..., ::CLIP_STRIDE, ::CLIP_STRIDE], expected[f"{name}.pipe.clip_in_every{CLIP_STRIDE}"])

    assert len(rec.dit) == n_segments  # one step, no CFG
    for k, kw in enumerate(rec.dit):
        ref_masks = kw["ref_masks"][0]
        assert torch.equal(ref_masks[:, :1], expected[f"{name}.pipe.ref_mask_28ch"])
        assert not ref_masks[:, 1:].any()  # official: zeros for the video frames
        assert torch.equal(kw["driving_masks"][0], expected[f"{name}.pipe.seg{k}.driving_masks_28ch"])
        assert kw["replace_flag"] == case["replace_flag"]
        if n_extra:
            official = torch.cat([expected[f"{name}.pipe.add_ref_mask_28ch.{i}"] for i in range(n_extra)], 1)
            assert torch.equal(kw["additional_ref_masks"][0], official)

    (frames,) = rec.written
    kept = [to_uint8_frames(v[:, (overlap if k else 0) :]) for k, v in enumerate(rec.decoded)]
    assert np.array_equal(frames, np.concatenate(kept))


@pytest.mark.parametrize("colormatrix", [None, "bt709"])
def test_lossy_driving_video_decodes_to_the_official_decoders_frames(tmp_path, colormatrix):
    """The official code decodes with decord (its torch bridge: uint8 RGB frames); we decode with PyAV. On an
    ordinary yuv420p H.264 (a real photo panned, untagged or tagged BT.709) both give the same RGB frames."""
    import av
    import decord
    from skimage import data

    from scailflow.media import read_video

    photo = data.astronaut()  # 512x512
    frames = np.stack([np.roll(photo, 9 * k, axis=1)[40:440, :480] for k in range(9)])
    path = tmp_path / "driving.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=16)
        s.pix_fmt, s.width, s.height = "yuv420p", 480, 400
        s.options = {"crf": "20"} | (
            {"x264-params": f"colorprim={colormatrix}:transfer={colormatrix}:colormatrix={colormatrix}"}
            if colormatrix
            else {}
        )
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    ours, _ = read_video(path)
    reader = decord.VideoReader(str(path), height=-1, width=-1)
    official = reader.get_batch(np.arange(len(reader))).asnumpy()
    assert ours.shape == official.shape == (9, 400, 480, 3)
    assert np.array_equal(ours, official)
