"""Step caches on the SCAIL-2 DiT: which forwards of a denoising loop run in full, which reuse the last one.

Kinds (`--step_cache KIND[:THRESHOLD]`, or the preset's: `balanced` uses `easy`):
- easy: EasyCache (Zhou et al. 2025, arXiv 2507.02860; training-free, no calibration). diffusers 0.42 has no EasyCache,
  so it is here: one hook on the whole transformer. After each full forward it keeps the transformation vector
  (output - input) and the transformation rate k (relative output change / relative input change between the last
  two full forwards); at a later step it adds k times the input's relative change to an accumulated estimate of the
  output's relative change, and while that stays under the threshold the transformer is not run: the output is the
  input plus the kept vector. The first 15% and the last 5% of the steps always run (as ComfyUI's EasyCache node).
- mag: diffusers' MagCache with this DiT's magnitude ratios (`scailflow calibrate` writes them; `calibration_path`).
- firstblock: diffusers' First Block Cache.
- taylorseer: diffusers' TaylorSeer in its lite form (the blocks skipped, the head's output extrapolated; the full
  form would keep Taylor factors of every attention output: ~0.5 GB each at 48,832 tokens, far too many).
diffusers' FasterCache is not offered: its CFG part needs the two branches batched and its attention states are
shared by both branches, which SCAIL-2's sequential CFG would mix.

SCAIL-2 specifics: the block is diffusers' WanTransformerBlock, already in diffusers' TransformerBlockRegistry
(`register_blocks` adds any other block class with Wan's metadata); each CFG branch runs in its own
`cache_context` (its own state); every segment starts fresh (`begin` resets all states: the history latents of a
new segment are a new trajectory). The forwards called and computed are counted per branch for the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from scailflow.errors import InputError
from scailflow.scail.options import PRESET_STEP_CACHE, SamplingOptions, StepCacheSpec, parse_step_cache

log = logging.getLogger("scailflow.scail")

EASY_HOOK = "scail_easy_cache"
CALIBRATE_HOOK = "scail_mag_calibration"
EASY_START = 0.15  # fraction of the steps always computed first (ComfyUI's EasyCache node: start_percent 0.15)
EASY_END = 0.95  # and from here on (end_percent 0.95)
MAG_RETENTION = 0.2  # MagCache: fraction of the first steps never skipped (diffusers' default)
MAG_MAX_SKIP = 3  # MagCache: at most this many skips in a row (diffusers' default)


# ------------------------------------------------------------------------------------------------ registry
def register_blocks(model: nn.Module) -> list[str]:
    """Put every block class of `model.blocks` in diffusers' TransformerBlockRegistry (Wan's metadata: returns the
    hidden states alone, first argument `hidden_states`); returns the classes it added (SCAIL-2's own block is
    diffusers' WanTransformerBlock, registered by diffusers already)."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    added = []
    TransformerBlockRegistry._register()
    for block in model.blocks:
        cls = type(block)
        if cls not in TransformerBlockRegistry._registry:
            TransformerBlockRegistry.register(cls, TransformerBlockMetadata(return_hidden_states_index=0))
            added.append(cls.__name__)
    return added


# ------------------------------------------------------------------------------------------------ EasyCache
@dataclass
class EasyCacheConfig:
    threshold: float = 0.2
    num_steps: int = 40
    start: float = EASY_START
    end: float = EASY_END
    force_skip_ratio: float | None = None  # benchmarks: skip this fraction of the steps in a fixed pattern

    def window(self) -> tuple[int, int]:
        """Steps [first, last) where a forward may be skipped."""
        first = max(1, int(round(self.start * self.num_steps)))
        return first, max(first, int(round(self.end * self.num_steps)))

    def forced_skips(self) -> set[int]:
        """The fixed pattern: floor(ratio * steps) skipped steps spread evenly (step i skipped when floor((i+1) r)
        passes an integer); step 0 always computes."""
        r = min(max(float(self.force_skip_ratio), 0.0), 0.99)
        return {i for i in range(self.num_steps) if math.floor((i + 1) * r + 1e-9) > math.floor(i * r + 1e-9)}


class EasyCacheState(BaseState):
    def __init__(self) -> None:
        self.step = 0
        self.prev_x: torch.Tensor | None = None  # the previous step's input
        self.prev_out_mag: float | None = None  # mean |output| of the previous step
        self.full_x: torch.Tensor | None = None  # input and output of the last full forward
        self.full_out: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None  # output - input of the last full forward
        self.rate: float | None = None  # transformation rate k
        self.accumulated = 0.0
        self.last_computed = True

    def reset(self) -> None:
        self.__init__()


def _rel(a: torch.Tensor, b: torch.Tensor, ref: torch.Tensor | float) -> float:
    """mean |a - b| / mean |ref| (L1, as EasyCache)."""
    num = (a.float() - b.float()).abs().mean()
    den = ref if isinstance(ref, float) else ref.float().abs().mean().item()
    return float(num.item()) / max(den, 1e-12)


class EasyCacheHook(ModelHook):
    """EasyCache on the whole transformer: the forward's first argument is the noisy latent, its result the flow."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager, config: EasyCacheConfig):
        super().__init__()
        self.state_manager = state_manager
        self.config = config
        self._forced = config.forced_skips() if config.force_skip_ratio is not None else None

    def reset_state(self, module):
        self.state_manager.reset()
        return module

    @torch.compiler.disable
    def _should_skip(self, state: EasyCacheState, x: torch.Tensor) -> bool:
        i = state.step
        if state.delta is None or state.delta.shape != x.shape:
            return False
        change = _rel(x, state.prev_x, state.prev_out_mag) if state.prev_x is not None else math.inf
        if self._forced is not None:  # the decision is fixed; the measurements above still cost what they cost
            return i in self._forced
        first, last = self.config.window()
        if not (first <= i < last) or state.rate is None:
            return False
        state.accumulated += state.rate * change
        return state.accumulated < self.config.threshold

    def new_forward(self, module: nn.Module, x, *args, **kwargs):
        state: EasyCacheState = self.state_manager.get_state()
        skip = self._should_skip(state, x)
        if skip:
            out = (x.float() + state.delta).to(state.full_out.dtype)
        else:
            out = self.fn_ref.original_forward(x, *args, **kwargs)
            self._update(state, x, out)
        state.last_computed = not skip
        state.prev_x = x.detach().clone()
        state.prev_out_mag = float(out.float().abs().mean().item())
        state.step += 1
        return out

    @torch.compiler.disable
    def _update(self, state: EasyCacheState, x: torch.Tensor, out: torch.Tensor) -> None:
        if state.full_out is not None and state.full_out.shape == out.shape:
            d_in = _rel(x, state.full_x, state.full_x)
            d_out = _rel(out, state.full_out, state.full_out)
            state.rate = d_out / max(d_in, 1e-12)
        state.full_x, state.full_out = x.detach().clone(), out.detach()
        state.delta = out.detach().float() - x.detach().float()
        state.accumulated = 0.0


# ------------------------------------------------------------------------------------------------ counting
@dataclass
class ForwardCount:
    """Transformer calls per CFG branch, and how many of them ran in full."""

    calls: dict[str, int] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)
    sequence: list[tuple[str, bool]] = field(default_factory=list)  # (branch, computed) of every call, in order

    def add(self, name: str, computed: bool) -> None:
        self.sequence.append((name, computed))
        self.calls[name] = self.calls.get(name, 0) + 1
        self.computed[name] = self.computed.get(name, 0) + int(computed)

    def record(self) -> dict:
        calls, done = sum(self.calls.values()), sum(self.computed.values())
        return {
            "forwards": calls,
            "computed": done,
            "skipped": calls - done,
            "by_branch": {k: {"forwards": v, "computed": self.computed[k]} for k, v in self.calls.items()},
        }


def start_counting(model: nn.Module) -> ForwardCount:
    """A fresh count for one generation (all its segments)."""
    model._scail_forward_count = ForwardCount()
    return model._scail_forward_count


def _last_computed(model: nn.Module, spec: StepCacheSpec | None) -> bool:
    """Whether the forward just run (in the current cache context) ran the blocks in full."""
    if spec is None:
        return True
    try:
        if spec.kind == "easy":
            hook = HookRegistry.check_if_exists_or_initialize(model).get_hook(EASY_HOOK)
            return hook.state_manager.get_state().last_computed
        head = HookRegistry.check_if_exists_or_initialize(model.blocks[0])
        if spec.kind == "firstblock":
            from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

            return head.get_hook(_FBC_LEADER_BLOCK_HOOK).state_manager.get_state().should_compute
        if spec.kind == "mag":
            from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK

            return head.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK).state_manager.get_state().should_compute
        if spec.kind == "taylorseer":
            from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

            st = head.get_hook(_TAYLORSEER_CACHE_HOOK).state_manager.get_state()
            return st.last_update_step == st.current_step
    except (AttributeError, KeyError, ValueError):
        pass
    return True


def _needs_steps(spec: StepCacheSpec) -> bool:
    return spec.kind in ("easy", "mag", "taylorseer")


@contextlib.contextmanager
def context(model: nn.Module, name: str):
    """Run one transformer call as CFG branch `name`: its own cache state, and counted."""
    spec = getattr(model, "_scail_step_cache", (None, 0))[0]
    count: ForwardCount | None = getattr(model, "_scail_forward_count", None)
    model._scail_branch = name
    if spec is None:
        yield
        if count is not None:
            count.add(name, True)
        return
    with model.cache_context(name):
        yield
        if count is not None:
            count.add(name, _last_computed(model, spec))


# ------------------------------------------------------------------------------------------------ attach / reset
def set_default(model: nn.Module, spec: StepCacheSpec | None, explicit: bool) -> None:
    """The cache the model options ask for (`explicit`: --step_cache was given, `off` included)."""
    model._scail_step_cache_default = (spec, explicit)


def spec_for(model: nn.Module, opts: SamplingOptions) -> StepCacheSpec | None:
    """--step_cache when given, else the preset's cache (None for quality, fast, comfy)."""
    spec, explicit = getattr(model, "_scail_step_cache_default", (None, False))
    if explicit:
        return spec
    return parse_step_cache(PRESET_STEP_CACHE.get(opts.preset))


def detach(model: nn.Module) -> None:
    spec = getattr(model, "_scail_step_cache", (None, 0))[0]
    if spec is None:
        return
    if spec.kind == "easy":
        HookRegistry.check_if_exists_or_initialize(model).remove_hook(EASY_HOOK, recurse=False)
    elif getattr(model, "is_cache_enabled", False):
        model.disable_cache()
    model._scail_step_cache = (None, 0)


def attach(model: nn.Module, spec: StepCacheSpec, steps: int) -> None:
    """Hook the cache `spec` onto the transformer for loops of `steps` steps."""
    register_blocks(model)
    if spec.kind == "easy":
        cfg = EasyCacheConfig(spec.threshold, steps, force_skip_ratio=spec.force_skip_ratio)
        HookRegistry.check_if_exists_or_initialize(model).register_hook(
            EasyCacheHook(StateManager(EasyCacheState), cfg), EASY_HOOK
        )
    elif spec.kind == "firstblock":
        from diffusers.hooks import FirstBlockCacheConfig

        model.enable_cache(FirstBlockCacheConfig(threshold=spec.threshold))
    elif spec.kind == "mag":
        from diffusers.hooks import MagCacheConfig

        ratios = load_mag_ratios(model)
        model.enable_cache(
            MagCacheConfig(
                threshold=spec.threshold,
                max_skip_steps=MAG_MAX_SKIP,
                retention_ratio=MAG_RETENTION,
                num_inference_steps=steps,
                mag_ratios=ratios,
            )
        )
    elif spec.kind == "taylorseer":
        from diffusers.hooks import TaylorSeerCacheConfig

        model.enable_cache(
            TaylorSeerCacheConfig(
                cache_interval=int(spec.threshold),
                disable_cache_before_step=max(2, int(round(EASY_START * steps))),
                use_lite_mode=True,
                taylor_factors_dtype=torch.float32,
            )
        )
    else:
        raise ValueError(f"unknown step cache {spec.kind}")
    model._scail_step_cache = (spec, steps if _needs_steps(spec) else None)


def begin(model: nn.Module, opts: SamplingOptions) -> StepCacheSpec | None:
    """Before each segment's denoising loop: the cache this generation asks for, hooked on, every state fresh."""
    opts = opts.resolved()
    spec = spec_for(model, opts)
    key = (spec, opts.steps if spec is not None and _needs_steps(spec) else None)
    if getattr(model, "_scail_step_cache", (None, None)) != key:
        detach(model)
        if spec is not None:
            attach(model, spec, opts.steps)
    if spec is not None:
        model._reset_stateful_cache()
    return spec


# ------------------------------------------------------------------------------------------------ MagCache ratios
def dit_identity(model: nn.Module) -> tuple[Path | None, str]:
    """(the DiT file or None, a key naming these weights): the file's name, size and first/last MiB hashed (a full
    hash of 33 GB would take minutes); `tiny-random` for the built-in tiny model."""
    path = getattr(model, "_scail_dit_path", None)
    if path is None:
        return None, "tiny-random"
    path = Path(path)
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return path, h.hexdigest()[:16]


def _home() -> Path:
    return Path(os.environ.get("SCAILFLOW_HOME", Path.home() / ".scailflow"))


def calibration_paths(model: nn.Module) -> list[Path]:
    """Where this DiT's MagCache ratios are looked for, in order: beside the DiT file, then SCAILFLOW_HOME."""
    path, key = dit_identity(model)
    out = [path.with_name(path.name + ".magcache.json")] if path is not None else []
    return out + [_home() / "magcache" / f"{key}.json"]


def calibration_command(model: nn.Module) -> str:
    path = getattr(model, "_scail_dit_path", None)
    where = f"--scail_path {path} --ckpt_dir DIR" if path else "--model tiny-random"
    return f"scailflow calibrate {where} --image ... --mask_image ... --pose ... --mask_video ..."


def load_mag_ratios(model: nn.Module) -> list[float]:
    for p in calibration_paths(model):
        if p.is_file():
            data = json.loads(p.read_text())
            model._scail_mag_source = str(p)
            return [float(r) for r in data["mag_ratios"]]
    raise InputError(
        f"--step_cache mag needs this DiT's magnitude ratios, measured once: run `{calibration_command(model)}` "
        "(or use --step_cache easy, which needs none)"
    )


def save_mag_ratios(model: nn.Module, data: dict) -> Path:
    """Write the ratios beside the DiT file, or under SCAILFLOW_HOME/magcache/ when that folder is read-only."""
    text = json.dumps(data, indent=2)
    for p in calibration_paths(model):
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, p)
            return p
        except OSError as e:
            log.info("cannot write %s (%s): trying the next place", p, e)
    raise InputError(f"cannot write the MagCache ratios to any of: {', '.join(map(str, calibration_paths(model)))}")


class MagCalibration:
    """Records MagCache's magnitude ratios over one uncached generation: per CFG branch and step, the mean over
    tokens of |residual_t| / |residual_t-1|, the residual being the last block's output minus the first block's input
    (diffusers' MagCache measures the same quantity when it skips)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.ratios: dict[str, list[float]] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._input: torch.Tensor | None = None
        self._handles = [
            model.blocks[0].register_forward_pre_hook(self._pre),
            model.blocks[-1].register_forward_hook(self._post),
        ]

    def _pre(self, module, args):
        self._input = args[0].detach()

    def _post(self, module, args, output):
        name = getattr(self.model, "_scail_branch", "cond")
        res = (output.float() - self._input.float()).detach()
        prev = self._prev.get(name)
        if prev is None or prev.shape != res.shape:
            ratio = 1.0
        else:
            ratio = (res.norm(dim=-1) / (prev.norm(dim=-1) + 1e-8)).mean().item()
        self.ratios.setdefault(name, []).append(ratio)
        self._prev[name] = res

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def calibrate(pipe, cond, opts: SamplingOptions, height: int, width: int, progress=None) -> tuple[Path, dict]:
    """One uncached generation of `cond`'s first segment with CFG at every step; writes the MagCache ratios of
    `pipe`'s DiT (`save_mag_ratios`) and returns (where, what). The two CFG branches' ratios are averaged: diffusers'
    MagCache takes one array for both."""
    import dataclasses

    opts = opts.resolved().model_copy(update={"cfg_truncate": 1.0})
    n = opts.segment_frames
    cond = dataclasses.replace(cond, driving=cond.driving[:n], driving_mask=cond.driving_mask[:n])
    model = pipe.transformer
    saved = getattr(model, "_scail_step_cache_default", (None, False))
    set_default(model, None, explicit=True)
    rec = MagCalibration(model)
    try:
        pipe(cond, height, width, opts, progress)
    finally:
        rec.close()
        model._scail_step_cache_default = saved
    by_branch = {k: v[: opts.steps] for k, v in rec.ratios.items()}
    mag = [sum(vals) / len(vals) for vals in zip(*by_branch.values())]
    _, key = dit_identity(model)
    data = {
        "mag_ratios": [round(r, 6) for r in mag],
        "by_branch": {k: [round(r, 6) for r in v] for k, v in by_branch.items()},
        "steps": opts.steps,
        "shift": opts.shift,
        "solver": opts.solver,
        "guidance": opts.guidance,
        "size": [width, height],
        "dit": key,
    }
    return save_mag_ratios(model, data), data
