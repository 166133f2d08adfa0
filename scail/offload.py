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
        from diffusers.hooks import apply_group_offloading

        blocks = len(transformer.blocks)
        block = transformer.blocks[0]  # fp8 linears keep their weights as buffers: count both
        per_block_gb = sum(t.numel() * t.element_size() for t in (*block.parameters(), *block.buffers())) / 2**30
        per_group = 1
        if self.vram_budget_gb:
            # two groups resident at once (the current one and the prefetched next one), plus ~40% for activations
            per_group = max(1, min(blocks, int(self.vram_budget_gb * 0.6 / (2 * max(per_block_gb, 1e-6)))))
        log.info("block offload: %d blocks per group (%.2f GiB per block)", per_group, per_block_gb)
        apply_group_offloading(
            transformer,
            onload_device=self.device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=per_group,
            use_stream=True,
        )
        self._grouped.add(id(transformer))

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
