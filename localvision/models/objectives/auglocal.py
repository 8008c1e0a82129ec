"""AugLocal (Ma et al., ICLR 2024): auxiliary nets built from the network's own later blocks.

The auxiliary net of local module k is ``d_k`` blocks sampled uniformly among the blocks after
the cut (always including the backbone's last block), as new re-initialised copies, followed by
the head of a base objective (``Greedy`` with a pool + linear head by default: the papers' loss is
cross-entropy only). Deeper auxiliary nets see what the rest of the network will do with the
module's output, which closes much of the gap to end-to-end training at large K.

``d_k`` falls linearly with depth ("pyramidal depth"): ``d_k = max(1, round(d (1 - tau r) +
tau r))`` with ``r = k / (K - 2)``, from ``d`` at the first local module to ``(1 - tau) d + tau``
at the last. The blocks of layer ``l`` (the cut) are ``round(l + i (L - 1 - l) / d_k)`` for
``i = 1..d_k`` (``L`` blocks in all; every later block when ``d_k >= L - 1 - l``).

Where a sampled block expects another width or stride than the map it gets (blocks skipped
across a stage transition), a conv1x1 - BN adapter with the stride of the skipped
transitions bridges them (the papers' code builds new ResNet blocks of the sampled width with
the stride folded in instead); this works on NCHW maps. Blocks of one width and stride (ViTs)
need no adapter, whatever their layout.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.models.split.block_copies import LaterBlocks
from localvision.registry import OBJECTIVES

from .base import LocalContext, LocalObjective, build_objective, takes_blocks

Tensor = torch.Tensor


def pyramid_depth(depth: int, tau: float, module_index: int, num_modules: int) -> int:
    """``d_k`` of local module ``module_index`` of a ``num_modules``-module split."""
    num_local = max(num_modules - 1, 1)
    r = module_index / (num_local - 1) if num_local > 1 else 0.0
    return max(1, int(round(depth * (1 - tau * r) + tau * r)))


def sampled_blocks(cut: int, last: int, depth: int) -> List[int]:
    """Blocks after ``cut`` (up to ``last``, inclusive) for an auxiliary net of ``depth`` blocks."""
    span = last - cut
    if depth >= span:
        return list(range(cut + 1, last + 1))
    return [int(round(cut + i * span / depth)) for i in range(1, depth + 1)]


class _Adapter(nn.Module):
    """conv1x1 - BN from the map a sampled block gets to the width and stride it expects."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, where: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.where = where

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.conv.in_channels:
            raise InputError(f'AugLocal: {self.where} needs a width / stride adapter, which works on NCHW maps, but '
                             f'the blocks hand on {tuple(x.shape)}; use a smaller model.local_objective.depth '
                             '(blocks of the same stage) or another objective for this backbone')
        return self.bn(self.conv(x))


@OBJECTIVES.register_module()
class AugLocal(LocalObjective):
    """AugLocal: sampled later blocks (new copies) + a base objective's head.

    Args:
        depth: ``d``, blocks of the first local module's auxiliary net.
        pyramid: ``tau`` of the pyramidal depth (0: every module gets ``d`` blocks; the papers'
            scripts use 0.5).
        base: the objective run on the last sampled block's output (by default the task's
            greedy objective: ``Greedy`` with ``PoolLinearHead``, ``SegGreedy``, ``DetGreedy``).
        blocks: the blocks after the cut (filled in by the model).
        base_kwargs: the task's settings for the base objective (``ignore_index``).
    """

    takes_blocks = True
    nested_objectives = ('base',)

    def __init__(self, in_channels: int, num_classes: int, depth: int = 2, pyramid: float = 0.5,
                 base: Optional[dict] = None, blocks: Optional[LaterBlocks] = None, module_index: int = 0,
                 num_modules: int = 1, in_stride: int = 1, **base_kwargs) -> None:
        super().__init__(in_channels, num_classes, module_index=module_index, num_modules=num_modules,
                         in_stride=in_stride)
        if blocks is None:
            raise InputError('AugLocal needs the blocks after the cut; build it through a local model '
                             '(model.local_objective), not on its own')
        if not isinstance(depth, int) or depth < 1:
            raise InputError(f'model.local_objective.depth={depth!r} must be an integer >= 1 (blocks of the '
                             'first auxiliary net)')
        if not 0 <= float(pyramid) <= 1:
            raise InputError(f'model.local_objective.pyramid={pyramid!r} must be in [0, 1]')
        self.depth = pyramid_depth(depth, float(pyramid), self.module_index, self.num_modules)
        cut, last = blocks.first - 1, len(blocks.seq) - 1
        if cut >= last:
            raise InputError(f'AugLocal: no block follows block {cut} of the backbone, so there is nothing to sample')
        self.indices = sampled_blocks(cut, last, self.depth)
        self._twin = blocks.copies(self.indices, fresh=True)
        self.copies = nn.ModuleList(nn.ModuleList(self._twin.infos[i].modules) for i in self.indices)
        adapters = []
        c, r = blocks.info(cut).num_chs, blocks.info(cut).reduction
        for i in self.indices:
            want = blocks.input_info(i)
            if (want.num_chs, want.reduction) == (c, r):
                adapters.append(nn.Identity())
            else:
                if want.reduction < r or want.reduction % r:
                    raise InputError(f'AugLocal: block {blocks.info(i).name} reads stride {want.reduction}, which '
                                     f'cannot be reached from stride {r}; use a smaller model.local_objective.depth')
                adapters.append(_Adapter(c, want.num_chs, want.reduction // r,
                                         f'block {blocks.info(i).name} (after {blocks.info(cut).name})'))
            c, r = blocks.info(i).num_chs, blocks.info(i).reduction
        self.adapters = nn.ModuleList(adapters)
        if base is None:  # the local model fills it with the task's greedy objective
            raise InputError('model.local_objective.base is required for AugLocal (the objective on its output)')
        if takes_blocks(base.get('type')):
            raise InputError(f"model.local_objective.base cannot be {base.get('type')}")
        self.base = build_objective(dict(base_kwargs, **base), c, num_classes, module_index, num_modules, in_stride=r)

    def extra_repr(self) -> str:
        return f'depth={self.depth}, blocks={self.indices}'

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        x = feat
        for adapter, i in zip(self.adapters, self.indices):
            x = self._twin.blocks[i](adapter(x))
        return self.base.loss(self._twin.to_map(x, ctx.img_hw), ctx)
