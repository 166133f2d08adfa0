"""SCAIL-2 sampling: check_inputs -> encode (text, CLIP, VAE, masks) -> prepare_latents -> denoise -> decode.

Works on pixels already read (numpy uint8); file handling lives in `scail.generate`. Device placement and
offload are the `Placement` strategy's business (scail/offload.py), never the model's.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
from typing import Callable

import numpy as np
import torch

from scailflow.errors import InputError
from scailflow.progress import report
from scailflow.scail import step_cache
from scailflow.scail.color import ColorMatcher
from scailflow.scail.conditioning import (
    frames_to_model,
    half_size,
    masks_to_28ch,
    still_to_model,
    to_uint8_frames,
)
from scailflow.scail.encoders import encode_image, encode_text, vae_decode, vae_encode, vae_stats
from scailflow.scail.inputs import Conditioning, check_inputs  # noqa: F401 - re-exported (torch-free home)
from scailflow.scail.offload import Placement
from scailflow.scail.options import SamplingOptions
from scailflow.scail.pose_control import pose_active, scale_pose
from scailflow.scail.resume import Carry, KeptFrames, MemorySegments, SegmentStore
from scailflow.scail.schedulers import make_scheduler
from scailflow.scail.segments import Segment, output_frames, plan_segments
from scailflow.scail.step_cache import context as cache_context

log = logging.getLogger("scailflow.scail")


class StageClock:
    """Wall seconds per stage of one generation (GPU work finished at each boundary), for the record's `timings`."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self.steps: list[float] = []  # every denoising step, in order (the first one pays any compile warm-up)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = self.now()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - t0

    def record(self) -> dict:
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        if self.steps:
            later = sorted(self.steps[1:])
            out["steps"] = len(self.steps)
            out["first_step"] = round(self.steps[0], 3)
            out["step_median"] = round(later[len(later) // 2], 3) if later else round(self.steps[0], 3)
        return out


def random_seed() -> int:
    """A seed for `--base_seed -1`: 0 .. 2**63 - 1 from Python's own generator, as the official code draws it (torch's
    global generator would repeat: building the tiny model seeds it)."""
    return random.randint(0, sys.maxsize)


def check_size(height: int, width: int) -> None:
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise InputError(f"target size {width}x{height} (WxH) must be positive multiples of 32")


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: the one place the formula lives."""
    return uncond + scale * (cond - uncond)


class SequentialCFG:
    """CFG as two passes, one after the other (the default: as fast as a batch of 2 on an H100, 5.6 GiB less)."""

    def branches(self, pipe: SCAIL2Pipeline, latents, t, ctx, neg_ctx, cond_kw) -> tuple[torch.Tensor, torch.Tensor]:
        with cache_context(pipe.transformer, "cond"):
            cond = pipe.transformer(latents, t, ctx, **cond_kw)
        with cache_context(pipe.transformer, "uncond"):
            uncond = pipe.transformer(latents, t, neg_ctx, **cond_kw)
        return cond, uncond


class BatchedCFG:
    """CFG as one batch of 2 (`--cfg_batch`)."""

    def branches(self, pipe: SCAIL2Pipeline, latents, t, ctx, neg_ctx, cond_kw) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {k: (torch.cat([v, v]) if isinstance(v, torch.Tensor) else v) for k, v in cond_kw.items()}
        with cache_context(pipe.transformer, "cfg"):
            both = pipe.transformer(torch.cat([latents, latents]), t.repeat(2), ctx + neg_ctx, **kw)
        cond, uncond = both.chunk(2)
        return cond, uncond


class SCAIL2Pipeline:
    """The SCAIL-2 model with its encoders; `__call__` turns a Conditioning into RGB uint8 frames."""

    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        image_encoder,
        placement: Placement | None = None,
        dtype: torch.dtype = torch.float32,
        label: str = "",
    ):
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer, self.image_encoder = text_encoder, tokenizer, image_encoder
        self.placement = placement or Placement("cpu")
        self.dtype = dtype
        self.label = label
        self.cfg = SequentialCFG()  # how CFG's two branches run: SequentialCFG, BatchedCFG, parallel.ParallelCFG
        self.speedups: dict = {}
        self.loras: list[dict] = []  # the merged LoRAs (path, alpha, layers, format), for the record
        self.load_seconds = 0.0
        self.clock: StageClock | None = None  # the generation in progress's stage clock

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def _autocast(self):
        enabled = self.dtype in (torch.bfloat16, torch.float16)
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    # -------------------------------------------------------------------------------- encode
    def encode_prompt(self, prompt: str, negative: str, with_negative: bool) -> tuple[list, list | None]:
        with self.placement.use(self.text_encoder):
            texts = [prompt, negative] if with_negative else [prompt]
            ctx = encode_text(self.text_encoder, self.tokenizer, texts, self.transformer.config.text_len)
        ctx = [c.to(self.device) for c in ctx]
        return ctx[:1], (ctx[1:] if with_negative else None)

    def _vae_encode(self, video: torch.Tensor) -> torch.Tensor:
        with self.placement.use(self.vae):
            return vae_encode(self.vae, video[None].to(self.device))

    def encode_reference(self, cond: Conditioning, height: int, width: int) -> dict[str, torch.Tensor]:
        """CLIP features, reference latent and mask, additional references (stacked along time).

        The stills are resized on the compute device, as the official code does (scail/conditioning.py)."""
        ref = still_to_model(cond.ref_image, height, width, self.device)
        ref_mask = still_to_model(cond.ref_mask, height, width, self.device)
        with self.placement.use(self.image_encoder):
            clip_fea = encode_image(self.image_encoder, ref[None])
        out = {
            "clip_fea": clip_fea,
            "ref_latents": self._vae_encode(ref[:, None]),
            "ref_masks": masks_to_28ch(ref_mask[:, None])[None],
        }
        if cond.additional_refs:
            lats, msks = [], []
            for img, msk in cond.additional_refs:
                lats.append(self._vae_encode(still_to_model(img, height, width, self.device)[:, None]))
                msks.append(masks_to_28ch(still_to_model(msk, height, width, self.device)[:, None])[None])
            out["additional_ref_latents"] = torch.cat(lats, 2)
            out["additional_ref_masks"] = torch.cat(msks, 2)
        return out

    def encode_driving(self, frames, masks, height: int, width: int, indices=None):
        """Driving latent (VAE of the 0.5x video) and its 28-channel mask, both at half the latent size. `frames` and
        `masks`: arrays or streamed videos, taken at `indices` (all by default).

        Resized as uint8 on the CPU, then halved and turned into masks on the compute device, as official."""
        video = frames_to_model(frames, height, width, indices).to(self.device)
        mask = frames_to_model(masks, height, width, indices).to(self.device)
        pose_latents = self._vae_encode(half_size(video))
        driving_masks = masks_to_28ch(mask, half=True)[None]
        return pose_latents, driving_masks

    # -------------------------------------------------------------------------------- sample
    def prepare_latents(self, frames: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        vae = self.vae.config
        shape = (
            1,
            vae.z_dim,
            (frames - 1) // vae.scale_factor_temporal + 1,
            height // vae.scale_factor_spatial,
            width // vae.scale_factor_spatial,
        )
        # drawn on the compute device from one generator seeded there, as the official code does: the same seed gives
        # the official noise on the same kind of device
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=self.device)

    def predict(self, latents, t, ctx, neg_ctx, guidance: float, cond_kw) -> torch.Tensor:
        """One (guided) flow prediction; `self.cfg` decides how the two CFG branches run."""
        tt = t.reshape(1).to(self.device)
        with self._autocast():
            if neg_ctx is None:
                with cache_context(self.transformer, "cond"):
                    return self.transformer(latents, tt, ctx, **cond_kw)
            cond, uncond = self.cfg.branches(self, latents, tt, ctx, neg_ctx, cond_kw)
        return combine_cfg(cond, uncond, guidance)

    def denoise(
        self,
        latents,
        ctx,
        neg_ctx,
        cond_kw,
        opts: SamplingOptions,
        history: torch.Tensor | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        sched = make_scheduler(opts.solver, opts.steps, opts.shift, device=self.device)
        n_hist = 0 if history is None else history.shape[2]
        flags = torch.zeros(1, 4, *latents.shape[2:], device=self.device)
        if n_hist:
            flags[:, :, :n_hist] = 1.0
        cond_kw = dict(cond_kw, history_mask=flags)
        posed = unposed = cond_kw
        if opts.pose_start > 0.0 or opts.pose_end < 1.0:  # outside ComfyUI's pose window: no pose
            unposed = dict(cond_kw, pose_latents=torch.zeros_like(cond_kw["pose_latents"]))
        step_cache.begin(self.transformer, opts)  # every segment starts with fresh cache states
        guided = opts.guided_steps()  # --cfg_truncate: the last steps run the conditional branch only
        clock = self.clock or StageClock(self.device)
        with self.placement.use(self.transformer):
            for i, t in enumerate(sched.timesteps):
                t0 = clock.now()
                if n_hist:
                    latents[:, :, :n_hist] = history
                active = pose_active(i, len(sched.timesteps), opts.pose_start, opts.pose_end)
                neg = neg_ctx if i < guided else None
                v = self.predict(latents, t, ctx, neg, opts.guidance, posed if active else unposed)
                latents = sched.step(v.float(), t, latents).prev_sample
                if n_hist:
                    latents[:, :, :n_hist] = history
                clock.steps.append(clock.now() - t0)
                if progress:
                    progress(i + 1, len(sched.timesteps))
        return latents

    def decode(self, latents: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Latents -> [3, T, H, W] in [-1, 1] on the CPU; `progress(frames done, frames)` as it goes."""
        with self.placement.use(self.vae):
            return vae_decode(self.vae, latents, progress)[0].cpu()

    @torch.no_grad()
    def __call__(
        self,
        cond: Conditioning,
        height: int,
        width: int,
        opts: SamplingOptions,
        progress: Callable[[str, int, int], None] | None = None,
        store: SegmentStore | None = None,
    ) -> tuple[np.ndarray | KeptFrames, dict]:
        """Generate; returns RGB uint8 frames [N, H, W, 3] and a record (seed, segments, frame counts).

        `store`: where finished segments are kept (scail/resume.py): a run that died continues at the first
        unfinished segment, the frames are read back from disk instead of held in memory. Without one, in memory.

        `progress(what, done, total)` (default: `scailflow.progress.report`) hears "denoise segment k/N" with the
        steps of all segments counted together, "decode" with each segment's decoded frames, and (more than one
        segment) "segment" with the finished segments."""
        progress = progress or report
        opts = opts.resolved()
        check_size(height, width)
        check_inputs(cond)
        seed = opts.seed if opts.seed >= 0 else random_seed()
        generator = torch.Generator(self.device).manual_seed(seed)
        plan = plan_segments(len(cond.driving), opts.segment_frames, opts.overlap_frames, opts.keep_tail)
        use_cfg = opts.guidance > 1.0
        method = opts.color_match or "off"
        matcher = ColorMatcher(method) if method != "off" and len(plan) > 1 else None
        store = store if store is not None else MemorySegments()
        fingerprint = {
            "seed": seed,
            "plan": [s.__dict__ for s in plan],
            "size": [height, width],
            "sampling": opts.key_doc(exclude={"seed"}),
            "label": self.label,
            "device": self.device.type,
        }
        first = store.start(fingerprint, len(plan))
        previous: torch.Tensor | None = None
        color_record: list[dict] = []
        if first:
            log.info("resuming at segment %d of %d", first + 1, len(plan))
            carry = store.restore(first)
            generator.set_state(carry.rng)
            previous, color_record = carry.history, carry.color_record
            if matcher is not None:
                matcher.restore(carry.matcher)
        clock = self.clock = StageClock(self.device)
        with clock.stage("text"):
            ctx, neg_ctx = self.encode_prompt(cond.prompt, opts.negative_prompt, use_cfg)
        with clock.stage("reference"):
            ref = self.encode_reference(cond, height, width)
        ref_kw = {"replace_flag": cond.replace, **ref}
        forwards = step_cache.start_counting(self.transformer)
        if len(plan) > 1:
            progress("segment", first, len(plan))
        for k, seg in enumerate(plan):
            if k < first:
                continue
            store.begin(k)
            with clock.stage("driving"):
                idx = self._segment_frames(cond, seg)  # a streamed clip is decoded here, a chunk at a time
                pose_latents, driving_masks = self.encode_driving(cond.driving, cond.driving_mask, height, width, idx)
                pose_latents = scale_pose(pose_latents, opts.pose_strength, *vae_stats(self.vae, pose_latents))
                latents = self.prepare_latents(seg.length, height, width, generator)
                history = None
                if seg.history:
                    # handed over in bf16, the official param dtype, before the VAE sees them
                    history = self._vae_encode(previous[:, -seg.history :].to(torch.bfloat16))
            cond_kw = dict(ref_kw, pose_latents=pose_latents, driving_masks=driving_masks)
            what = f"denoise segment {k + 1}/{len(plan)}"
            progress(what, k * opts.steps, len(plan) * opts.steps)

            def step_cb(i: int, n: int, k: int = k, what: str = what) -> None:
                progress(what, k * n + i, len(plan) * n)

            with clock.stage("denoise"):
                latents = self.denoise(latents, ctx, neg_ctx, cond_kw, opts, history, step_cb)
            with clock.stage("decode"):
                video = self.decode(latents, lambda i, n: progress("decode", i, n))
            if matcher is not None:  # before the hand-over: the next segment starts from the matched colours
                video, stats = self._match_colors(matcher, video, first=k == 0)
                if stats:
                    color_record.append({"segment": k + 1, **stats})
            hand_over = plan[k + 1].history if k + 1 < len(plan) else 0
            carry = Carry(
                rng=generator.get_state(),
                history=video[:, -hand_over:].clone() if hand_over else None,
                matcher=matcher.state() if matcher is not None and k == 0 else {},  # the first segment's, once
                color_record=list(color_record),
            )
            store.keep(k, to_uint8_frames(video[:, seg.history : seg.length - seg.pad]), carry)
            previous = carry.history
            del video, latents
            if len(plan) > 1:
                progress("segment", k + 1, len(plan))
        frames = store.frames()
        record = {
            "seed": seed,
            "segments": [s.__dict__ for s in plan],
            "frames_in": len(cond.driving),
            "frames_out": output_frames(plan),
            "height": height,
            "width": width,
            "guidance_used": use_cfg,
            "step_cache": {"kind": getattr(step_cache.spec_for(self.transformer, opts), "label", "off")}
            | forwards.record(),
            "color_match": {"method": method if matcher else "off", "segments": color_record},
            "timings": clock.record(),
        }
        if color_record:
            log.info(
                "colour matched to the first segment (%s): mean Lab drift %s -> %s",
                method,
                max(c["lab_drift_before"] for c in color_record),
                max(c["lab_drift_after"] for c in color_record),
            )
        return frames, record

    @staticmethod
    def _match_colors(matcher: ColorMatcher, video: torch.Tensor, first: bool) -> tuple[torch.Tensor, dict]:
        """[3, T, H, W] in [-1, 1]: the first segment sets the statistics, later ones are matched to them."""
        frames = ((video.permute(1, 2, 3, 0).float().numpy() + 1.0) / 2.0).clip(0.0, 1.0)
        if first:
            matcher.set_reference(frames)
            return video, {}
        matched, stats = matcher.match(frames)
        out = torch.from_numpy(matched.astype(np.float32)).permute(3, 0, 1, 2) * 2.0 - 1.0
        return out.to(video.dtype), stats

    @staticmethod
    def _segment_frames(cond: Conditioning, seg: Segment) -> np.ndarray:
        """The driving frames of a segment (the last one repeated where the segment is padded)."""
        return np.minimum(np.arange(seg.start, seg.start + seg.length), len(cond.driving) - 1)
