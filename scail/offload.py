"""Where the models live while they run: all on the GPU, one component at a time, or the DiT block by block.

Kept apart from the model code on purpose. Block-level offload is diffusers' group offloading (CUDA streams
prefetch the next group while the current one computes).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from scailflow.scail.options import OFFLOAD_MODES

log = logging.getLogger("scailflow.scail")


class Placement:
    """`use(module)` brings a component where it runs; modes: none | model | block."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        mode: str = "none",
        vram_budget_gb: float | None = None,
        cpu_only: tuple[str, ...] = (),
    ):
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload mode must be one of {', '.join(OFFLOAD_MODES)}")
        self.device = torch.device(device)
        self.mode = mode if self.device.type == "cuda" else "none"
        self.vram_budget_gb = vram_budget_gb
        self.cpu_only = cpu_only  # components that stay on (and run on) the CPU, e.g. the T5 with --t5_cpu
        self._grouped: set[int] = set()
        self._on_cpu: set[int] = set()

    def prepare(self, modules: dict[str, torch.nn.Module]) -> None:
        """Initial placement of every component."""
        for name, m in modules.items():
            if m is None:
                continue
            if name in self.cpu_only:
                m.to("cpu")
                self._on_cpu.add(id(m))
            elif self.mode == "none":
                m.to(self.device)
            elif self.mode == "block" and name == "transformer":
                self._group_offload(m)
            else:
                m.to("cpu")

    def _group_offload(self, transformer) -> None:
        blocks = transformer.blocks
        per_block_gb = module_gib(blocks[0])  # fp8 linears keep their weights as buffers: module_gib counts both
        other_gb = module_gib(transformer) - per_block_gb * len(blocks)
        resident, why = plan_resident_blocks(len(blocks), per_block_gb, other_gb, self.vram_budget_gb)
        log.info(
            "block offload: %d of %d blocks stay on the GPU, %d stream one at a time (%.2f GiB per block; %s)",
            resident,
            len(blocks),
            len(blocks) - resident,
            per_block_gb,
            why,
        )
        if resident == len(blocks):
            transformer.to(self.device)
        else:
            stream_blocks(transformer, resident, self.device, use_stream=self.device.type == "cuda")
        self._grouped.add(id(transformer))  # placed for good: `use` leaves it where it is

    @contextlib.contextmanager
    def use(self, module: torch.nn.Module):
        if self.mode == "none" or id(module) in self._grouped or id(module) in self._on_cpu:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def module_gib(module: torch.nn.Module) -> float:
    """Parameters and buffers of `module`, in GiB."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())) / 2**30


def plan_resident_blocks(
    num_blocks: int, per_block_gb: float, other_gb: float, budget_gb: float | None
) -> tuple[int, str]:
    """How many DiT blocks stay on the GPU under `budget_gb` for the DiT's weights; the others stream one at a time,
    two on the GPU at once (the running one and the prefetched next). diffusers' streamed group offloading takes one
    block per group only, so the budget is spent on resident blocks instead of larger groups. Returns (blocks kept,
    why)."""
    if not budget_gb:
        return 0, "no --vram_budget_gb: least memory"
    for resident in range(num_blocks, -1, -1):
        in_flight = min(2, num_blocks - resident)
        need = other_gb + (resident + in_flight) * per_block_gb
        if need <= budget_gb:
            if resident == num_blocks:
                return resident, f"the whole DiT ({need:.1f} GiB) fits the {budget_gb:g} GiB budget: nothing streams"
            return resident, f"{need:.1f} GiB of weights on the GPU within the {budget_gb:g} GiB budget"
    least = other_gb + min(2, num_blocks) * per_block_gb
    log.warning(
        "--vram_budget_gb %g is below the least block offload can do (%.1f GiB of weights): streaming every block",
        budget_gb,
        least,
    )
    return 0, f"budget {budget_gb:g} GiB below the {least:.1f} GiB minimum"


def stream_blocks(transformer: torch.nn.Module, resident: int, device, use_stream: bool = True) -> None:
    """diffusers' group offloading, one block per group with stream prefetch, on all but the first `resident` blocks,
    which stay on `device` (their offload hooks are taken off before the first forward records the order)."""
    from diffusers.hooks import HookRegistry, apply_group_offloading

    apply_group_offloading(
        transformer,
        onload_device=torch.device(device),
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=use_stream,
    )
    lazy = HookRegistry.check_if_exists_or_initialize(transformer).get_hook("lazy_prefetch_group_offloading")
    for i, block in enumerate(transformer.blocks[:resident]):
        registry = HookRegistry.check_if_exists_or_initialize(block)
        for name in ("group_offloading", "layer_execution_tracker"):
            registry.remove_hook(name, recurse=False)
        if lazy is not None:  # else its first forward warns that these blocks "were not executed"
            lazy._layer_execution_tracker_module_names.discard(f"blocks.{i}")
        block.to(device)
