"""Several GPUs on one clip: CFG parallel (cond and uncond on different ranks) x Ulysses sequence parallel.

Layout for N ranks: with guidance (CFG) and N even, ranks form a (cfg=2, ulysses=N/2) grid, rank = cfg_rank * U + u;
otherwise all N ranks are one Ulysses group. Ulysses is diffusers' context parallelism driven by the model's own
`_cp_plan` (the token sequence and its RoPE split over the ranks entering block 0, the head's output gathered);
`ulysses_anything` is switched on when the model's attention heads (its config's `num_attention_heads`) do not
divide by the group size. Each CFG rank runs one branch
of the guidance on its Ulysses group; the two predictions are exchanged with one all-gather and combined on every
rank, so all ranks step the same latents. Rank 0 writes the video.

Launch (one process per GPU):
    torchrun --standalone --nproc-per-node N -m scailflow.scail.parallel <scailflow generate flags>
    scailflow generate --gpus N <flags>       (re-executes itself under torchrun)

No class is swapped: the pipeline's guidance strategy (`pipe.cfg`) becomes `ParallelCFG`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from scailflow.options import from_flags
from scailflow.scail.arguments import add_generate_arguments, read_prompt, request_from_args, save_file_from_args
from scailflow.scail.options import ModelOptions, SamplingOptions
from scailflow.scail.pipeline import SequentialCFG, random_seed
from scailflow.scail.speed import cache_context

log = logging.getLogger("scailflow.scail")


# ------------------------------------------------------------------------------------------------ the plan (pure)
@dataclasses.dataclass(frozen=True)
class ParallelPlan:
    world_size: int
    cfg_degree: int  # 1 or 2
    ulysses_degree: int
    ulysses_anything: bool = False  # heads (or tokens) not divisible by the Ulysses degree

    def coords(self, rank: int) -> tuple[int, int]:
        """(cfg_rank, ulysses_rank) of a global rank."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside a world of {self.world_size}")
        return divmod(rank, self.ulysses_degree)

    def cfg_group_ranks(self) -> list[list[int]]:
        """Ranks that exchange their CFG branch (same Ulysses position, different CFG rank)."""
        return [[c * self.ulysses_degree + u for c in range(self.cfg_degree)] for u in range(self.ulysses_degree)]

    def ulysses_group_ranks(self) -> list[list[int]]:
        return [[c * self.ulysses_degree + u for u in range(self.ulysses_degree)] for c in range(self.cfg_degree)]


def plan_parallel(world_size: int, use_cfg: bool, heads: int, cfg_parallel: bool = True) -> ParallelPlan:
    """How N ranks share one clip: CFG split in 2 when guidance is on and N is even, Ulysses over the rest. `heads`:
    the model's attention heads (`attention_heads`), which Ulysses splits over its group."""
    if world_size < 1:
        raise ValueError("world size must be >= 1")
    cfg = 2 if (use_cfg and cfg_parallel and world_size % 2 == 0) else 1
    uly = world_size // cfg
    return ParallelPlan(world_size, cfg, uly, ulysses_anything=uly > 1 and heads % uly != 0)


def attention_heads(transformer) -> int:
    """The attention head count of the model that was built (its config, as read from the checkpoint's config.json)."""
    return int(transformer.config.num_attention_heads)


def branch_context(ctx, neg_ctx, cfg_rank: int):
    """Text context this CFG rank runs: the prompt on cfg rank 0, the negative prompt on cfg rank 1."""
    if cfg_rank not in (0, 1):
        raise ValueError("cfg rank must be 0 or 1")
    return ctx if cfg_rank == 0 else neg_ctx


# ------------------------------------------------------------------------------------------------ distributed state
@dataclasses.dataclass
class ParallelState:
    plan: ParallelPlan
    rank: int
    cfg_rank: int
    ulysses_rank: int
    cfg_group: object | None = None  # process group of this rank's CFG pair


def init_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; NCCL on GPUs, gloo on CPUs."""
    import torch.distributed as dist

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, local


def make_cfg_groups(plan: ParallelPlan, rank: int):
    """new_group must be called by every rank for every group, in the same order; returns this rank's CFG group."""
    import torch.distributed as dist

    mine = None
    if plan.cfg_degree > 1:
        for ranks in plan.cfg_group_ranks():
            g = dist.new_group(ranks)
            if rank in ranks:
                mine = g
    return mine


def enable_ulysses(transformer, plan: ParallelPlan, device_type: str = "cuda") -> None:
    """diffusers context parallelism (Ulysses) on this rank's group, via the model's `_cp_plan`."""
    if plan.ulysses_degree == 1:
        return
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(
        device_type, (plan.cfg_degree, 1, plan.ulysses_degree), mesh_dim_names=("cfg", "ring", "ulysses")
    )
    cp = ContextParallelConfig(
        ulysses_degree=plan.ulysses_degree, ulysses_anything=plan.ulysses_anything, mesh=mesh["ring", "ulysses"]
    )
    transformer.enable_parallelism(config=cp)


def gather_cfg(out: torch.Tensor, state: ParallelState) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) on every rank of a CFG pair from each rank's own branch."""
    import torch.distributed as dist

    parts = [torch.empty_like(out) for _ in range(2)]
    dist.all_gather(parts, out.contiguous(), group=state.cfg_group)
    return parts[0], parts[1]


class ParallelCFG:
    """CFG split over a pair of ranks: each runs its own branch, the two are exchanged with one all-gather (the
    pipeline's guidance strategy, set as `pipe.cfg`)."""

    def __init__(self, state: ParallelState):
        self.state = state

    def branches(self, pipe, latents, t, ctx, neg_ctx, cond_kw) -> tuple[torch.Tensor, torch.Tensor]:
        if self.state.plan.cfg_degree == 1:
            return SequentialCFG().branches(pipe, latents, t, ctx, neg_ctx, cond_kw)
        name = "cond" if self.state.cfg_rank == 0 else "uncond"
        with cache_context(pipe.transformer, name):
            out = pipe.transformer(latents, t, branch_context(ctx, neg_ctx, self.state.cfg_rank), **cond_kw)
        return gather_cfg(out, self.state)


# ------------------------------------------------------------------------------------------------ entry points
def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch.distributed as dist

    from scailflow.scail.generate import generate, read_conditioning
    from scailflow.scail.loading import load_pipeline

    p = argparse.ArgumentParser(
        prog="scailflow.scail.parallel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_generate_arguments(p)
    p.add_argument("--no-cfg-parallel", action="store_true", help="all ranks in one Ulysses group")
    args = p.parse_args(argv)
    rank, world, local = init_distributed()
    opts = from_flags(SamplingOptions, args).resolved()
    seed = torch.tensor(
        [opts.seed if opts.seed >= 0 else random_seed()],
        dtype=torch.int64,
        device=f"cuda:{local}" if torch.cuda.is_available() else "cpu",
    )
    dist.broadcast(seed, src=0)  # one seed for all ranks: they must draw the same noise
    opts = opts.model_copy(update={"seed": int(seed.item())})
    model_opts = from_flags(ModelOptions, args)
    if torch.cuda.is_available():
        model_opts = model_opts.model_copy(update={"device": f"cuda:{local}"})
    tmp = None
    save = save_file_from_args(args, read_prompt(args.prompt))
    if rank != 0:  # every rank runs the same code path; only rank 0's file is kept
        tmp = tempfile.mkdtemp(prefix=f"scail-rank{rank}-")
        save = Path(tmp) / save.name
    req = request_from_args(args, save)
    inputs = read_conditioning(req)
    pipe = load_pipeline(model_opts)
    plan = plan_parallel(world, opts.guidance > 1.0, attention_heads(pipe.transformer), not args.no_cfg_parallel)
    cfg_rank, uly_rank = plan.coords(rank)
    state = ParallelState(plan, rank, cfg_rank, uly_rank, make_cfg_groups(plan, rank))
    if rank == 0:
        log.info("parallel plan: %s", plan)
    enable_ulysses(pipe.transformer, plan, "cuda" if torch.cuda.is_available() else "cpu")
    pipe.cfg = ParallelCFG(state)
    try:
        record = generate(pipe, req, opts, inputs=inputs)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if rank == 0:
        print(
            f"wrote {record['output']} ({record['frames_out']} frames, seed {record['seed']}, {world} ranks, "
            f"cfg x{plan.cfg_degree}, ulysses x{plan.ulysses_degree})"
        )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(main())
