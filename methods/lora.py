"""Per-modality LoRA experts on the q and v projections of every Hiera block.

sam2's Hiera computes q, k and v with one fused ``qkv`` Linear whose output is laid out as
``[q | k | v]``, each ``dim_out`` wide (``dim_out != dim`` at the stage-start q-pool blocks, so
the update is sized from ``qkv.out_features // 3``). For modality ``m`` the paper's Eq. (4-5)
adds ``s * B_q A_q x`` to q and ``s * B_v A_v x`` to v, with A kaiming-uniform and B zero so
training starts from the frozen encoder exactly.

The experts are attached with a forward hook on each frozen ``qkv`` Linear rather than by
replacing the module: the trunk keeps sam2's parameter names, so a SAM2 checkpoint loads
straight into it, and all LoRA weights live in one separate module.

Grouped execution: instead of a Python loop running the trunk once per modality, the modalities
are stacked along the batch dimension and the trunk runs once; in every block each modality's
contiguous slice of the batch gets its own low-rank delta (a batched matmul over modalities).
Hiera's window partitioning keeps each sample's windows contiguous, so the slices survive it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn


class LoRAExperts(nn.Module):
    """Low-rank q/v updates for one ``qkv`` Linear, one expert per modality."""

    def __init__(
        self, in_features: int, qkv_out_features: int, modalities: Sequence[str], rank: int, alpha: float
    ) -> None:
        super().__init__()
        if qkv_out_features % 3:
            raise ValueError(f"qkv output {qkv_out_features} is not divisible by 3")
        self.modalities = tuple(modalities)
        self.index = {m: i for i, m in enumerate(self.modalities)}
        self.rank = rank
        self.dim_out = qkv_out_features // 3
        self.scaling = alpha / rank
        n = len(self.modalities)
        # A for q and v stacked: (modalities, 2 * rank, in); B for q and v: (modalities, 2, out, rank)
        self.lora_a = nn.Parameter(torch.empty(n, 2 * rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(n, 2, self.dim_out, rank))
        for i in range(n):
            # nn.Linear's default init (kaiming-uniform, a=sqrt(5)) on each A, as LoRA does.
            for part in self.lora_a.data[i].split(rank):
                nn.init.kaiming_uniform_(part, a=math.sqrt(5))

    def delta(self, x: torch.Tensor, active: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """q and v updates for ``x`` whose batch is ``len(active)`` equal modality slices."""
        idx = [self.index[m] for m in active]
        n_mod, feat = len(idx), x.shape[-1]
        lead = x.shape[:-1]
        xs = x.reshape(n_mod, -1, feat)  # (M, tokens, in)
        if n_mod == len(self.modalities) and idx == list(range(n_mod)):
            a, b = self.lora_a, self.lora_b
        else:
            sel = torch.tensor(idx, device=x.device)
            a, b = self.lora_a.index_select(0, sel), self.lora_b.index_select(0, sel)
        a = a.to(x.dtype)
        b = b.to(x.dtype)
        low = torch.bmm(xs, a.transpose(1, 2))  # (M, tokens, 2r)
        low_q, low_v = low.split(self.rank, dim=-1)
        dq = torch.bmm(low_q, b[:, 0].transpose(1, 2)) * self.scaling
        dv = torch.bmm(low_v, b[:, 1].transpose(1, 2)) * self.scaling
        return dq.reshape(*lead, self.dim_out), dv.reshape(*lead, self.dim_out)


class ModalityLoRA(nn.Module):
    """All LoRA experts of a trunk, plus the switch that says which modalities are running."""

    def __init__(self, trunk: nn.Module, modalities: Sequence[str], rank: int, alpha: float) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.experts = nn.ModuleList()
        self._active: tuple[str, ...] | None = None
        self._handles = []
        for block in trunk.blocks:
            qkv: nn.Linear = block.attn.qkv
            experts = LoRAExperts(qkv.in_features, qkv.out_features, modalities, rank, alpha)
            self.experts.append(experts)
            self._handles.append(qkv.register_forward_hook(self._make_hook(experts)))

    def _make_hook(self, experts: LoRAExperts):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            if self._active is None:
                return output  # plain frozen encoder (used by the B=0 equivalence test)
            dq, dv = experts.delta(inputs[0], self._active)
            q, k, v = output.split(experts.dim_out, dim=-1)
            return torch.cat([q + dq, k, v + dv], dim=-1)

        return hook

    @contextlib.contextmanager
    def active(self, modalities: Sequence[str]) -> Iterator[None]:
        """Within the block, the trunk's batch is ``len(modalities)`` stacked modality slices."""
        unknown = [m for m in modalities if m not in self.modalities]
        if unknown:
            raise KeyError(f"no LoRA expert for modalities {unknown}")
        previous, self._active = self._active, tuple(modalities)
        try:
            yield
        finally:
            self._active = previous

    def parameters_of(self, modality: str) -> list[nn.Parameter]:
        """Number-of-parameter bookkeeping: the slices of each expert owned by ``modality``.

        The experts are stored stacked over modalities, so this returns views for counting only.
        """
        i = self.modalities.index(modality)
        return [t for e in self.experts for t in (e.lora_a[i], e.lora_b[i])]
