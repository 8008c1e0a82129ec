"""MAN (Su et al., ECCV 2024): a momentum auxiliary network.

Local module k's auxiliary net starts with two copies of the **first block of module k+1**: an
EMA copy that follows the live block (``ema <- m * ema + (1 - m) * live`` once per training
iteration, no gradient) and a learnable copy (new weights, MAN's "learnable bias"). Their sum
``y = LB(x) + EMA(x)`` goes to a base objective (greedy, DGL or InfoPro, as in the paper). The EMA
copy lets module k see how the next module currently reads its output, without a gradient
crossing the cut. MAN++ (TPAMI 2026) weighs them ``s * LB(x) + (2 - s) * EMA(x)`` with a learnable
``s`` starting at 1 (``learnable_scale=True``).

The EMA reads the next module's weights. With module-parallel training (``pipeline``), where
module k+1 trains in another process, that process sends them back after every iteration and
the EMA follows the copy (:meth:`follow`): ``pipeline.follow_lag`` L says how many iterations old
the copy may be (0: the weights the single-process run reads, at the cost of stage k waiting for
stage k+1 at each iteration's start; see :mod:`localvision.engine.pipeline.follow`).
Data-parallel replicas update their EMA copies alike (the live weights are the same on every
rank).

Differences from the papers' code: the EMA copy starts equal to the live block (the code starts it
from a fresh initialisation, which the EMA forgets within a few hundred iterations at m=0.995);
the update runs at the start of module k's training forward, which sees the same live weights as
the code's update after module k's backward (the next module has not stepped in between).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.models.split.block_copies import LaterBlocks
from localvision.registry import OBJECTIVES

from .base import LocalContext, LocalObjective, build_objective, takes_blocks

Tensor = torch.Tensor


@OBJECTIVES.register_module()
class MAN(LocalObjective):
    """MAN: EMA copy + learnable copy of the next module's first block, then a base objective.

    Args:
        momentum: ``m`` of the EMA (0.995 in the papers' scripts).
        learnable_scale: MAN++'s ``s * LB + (2 - s) * EMA`` with a learnable ``s`` (else ``LB + EMA``).
        base: the objective run on ``y`` (the task's greedy objective by default; the paper's
            main setting is ``dict(type='InfoPro', ...)``).
        blocks: the blocks after the cut (filled in by the model).
    """

    takes_blocks = True
    nested_objectives = ('base',)
    reads_next_module = True

    def __init__(self, in_channels: int, num_classes: int, momentum: float = 0.995, learnable_scale: bool = False,
                 base: Optional[dict] = None, blocks: Optional[LaterBlocks] = None, module_index: int = 0,
                 num_modules: int = 1, in_stride: int = 1, **base_kwargs) -> None:
        super().__init__(in_channels, num_classes, module_index=module_index, num_modules=num_modules,
                         in_stride=in_stride)
        if blocks is None:
            raise InputError('MAN needs the blocks after the cut; build it through a local model '
                             '(model.local_objective), not on its own')
        if not 0 <= float(momentum) <= 1:
            raise InputError(f'model.local_objective.momentum={momentum!r} must be in [0, 1]')
        if base is None:
            raise InputError('model.local_objective.base is required for MAN (the objective on its output)')
        if takes_blocks(base.get('type')):
            raise InputError(f"model.local_objective.base cannot be {base.get('type')}")
        self.momentum = float(momentum)
        self.block = blocks.first
        name = blocks.info(self.block).name
        self._ema_twin = blocks.copies([self.block], fresh=False)
        self._lb_twin = blocks.copies([self.block], fresh=True)
        self.ema = nn.ModuleList(self._ema_twin.infos[self.block].modules)
        self.lb = nn.ModuleList(self._lb_twin.infos[self.block].modules)
        self.ema.requires_grad_(False)
        self._live = list(blocks.live_modules(self.block))
        self._source: Optional[list] = None  # a copy of the live parameters to read instead (module-parallel)
        self.scale = nn.Parameter(torch.ones(())) if learnable_scale else None
        out = blocks.info(self.block)
        self.source = name
        self.base = build_objective(dict(base_kwargs, **base), out.num_chs, num_classes, module_index, num_modules,
                                    in_stride=out.reduction)

    def init_weights(self) -> None:
        """The papers' initialisation of everything but the EMA copy, which keeps the live weights."""
        ema = {k: v.clone() for k, v in self.ema.state_dict().items()}
        super().init_weights()
        self.ema.load_state_dict(ema)

    def extra_repr(self) -> str:
        return f'source={self.source}, momentum={self.momentum:g}'

    def next_module_parameters(self) -> list:
        """The live parameters of the next module's first block, which the EMA follows."""
        return [p for m in self._live for p in m.parameters()]

    def follow(self, source) -> None:
        if source is not None:
            live = self.next_module_parameters()
            if [tuple(t.shape) for t in source] != [tuple(p.shape) for p in live]:
                raise ValueError('MAN.follow: the source does not match the next module\'s first block')
        self._source = None if source is None else list(source)

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- m * ema + (1 - m) * live`` for the parameters of the next module's first block
        (or of the copy it follows)."""
        live = self.next_module_parameters() if self._source is None else self._source
        ema = [p for m in self.ema for p in m.parameters()]
        for e, p in zip(ema, live):
            e.lerp_(p.detach().to(e.dtype), 1.0 - self.momentum)

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        if self.training:
            self.update_ema()
        lb = self._lb_twin.blocks[self.block](feat)
        ema = self._ema_twin.blocks[self.block](feat)
        y = lb + ema if self.scale is None else self.scale * lb + (2 - self.scale) * ema
        return self.base.loss(self._lb_twin.to_map(y, ctx.img_hw), ctx)
