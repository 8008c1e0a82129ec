"""HPFF (Su et al., ECCV 2024): hierarchical local learning with patch feature fusion.

**Hierarchical local learning (HiLo).** Besides the *independent* local modules (module k trained
by a loss on its own output), HPFF trains *cascade* local modules: two adjacent modules together,
by a loss on the second one's output. Local module k's objective therefore has two terms:

- ``independent``: an objective on module k's output (the task's greedy objective by default),
  weighted ``independent_weight`` (the papers' CIFAR code: 0.001; its ImageNet code drops it);
- ``base``: the cascade term: module k's output runs through the **live** module k+1 and ``base``
  (the papers use InfoPro) is put on that output, weighted ``cascade_weight`` (0.999). Its
  gradient reaches module k+1 and module k, so every pair of adjacent modules ``(k, k+1)`` is
  trained together as in the paper; no gradient goes further back than module k.

**Patch feature fusion (PFF).** The cascade term's auxiliary nets (its head and decoder) run on a
``patches x patches`` grid of the map, one patch at a time with shared weights: vector outputs
(class logits, embeddings) are averaged over the patches, map outputs (reconstructions, dense
heads) are put back in place, each patch predicting its own region of the image.

Costs and limits: module k+1 runs twice per iteration (in unit k's cascade and in its own unit),
and unit k keeps the activations of two modules (measure with ``tools/analysis/benchmark_memory.py``).
The cascade trains module k+1 from unit k's loss, so module k+1's gradient is complete only after
its own unit: HPFF needs the default executor (one step per iteration; ``step_each_module`` /
``step_in_backward`` are refused), refuses the context supply (module k+1's input would lack its
context projections) and module-parallel training (module k+1 trains in another process).
Data parallelism is exact (module k+1's gradients are averaged after its own unit).

Differences from the papers' code: the last cascade (modules K-2, K-1) ends in the objective's own
auxiliary net, not in the network's classifier (it works for every task); PFF's patches share one
auxiliary net (the CIFAR code has one decoder per quadrant); the balanced split, which profiles
cuts before the modules exist, counts one block of module k+1 for the cascade.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.models.split.block_copies import LaterBlocks
from localvision.registry import OBJECTIVES

from .base import LocalContext, LocalObjective, build_objective, takes_blocks

Tensor = torch.Tensor


def grid_edges(n: int, parts: int) -> List[int]:
    """``parts + 1`` edges splitting ``n`` rows (or columns) into near-equal parts."""
    return [int(round(i * n / parts)) for i in range(parts + 1)]


class PatchFusion(nn.Module):
    """Runs ``net`` on each patch of a ``patches x patches`` grid of its input map and fuses the
    outputs: 2-D outputs (vectors) are averaged, 4-D outputs (maps) are put back in place.

    A map with fewer rows or columns than ``patches`` is split into as many parts as it has. For
    a decoder (``net(x, size)``), each patch is decoded to its share of ``size``.
    """

    def __init__(self, net: nn.Module, patches: int = 2) -> None:
        super().__init__()
        self.net = net
        self.patches = int(patches)

    def extra_repr(self) -> str:
        return f'patches={self.patches}'

    def forward(self, x: Tensor, size: Optional[Sequence[int]] = None) -> Any:
        h, w = x.shape[-2:]
        rows, cols = grid_edges(h, min(self.patches, h)), grid_edges(w, min(self.patches, w))
        if size is not None:
            size = [int(s) for s in size]
            out_rows = [int(round(e * size[0] / h)) for e in rows]
            out_cols = [int(round(e * size[1] / w)) for e in cols]
        outs = []
        for i in range(len(rows) - 1):
            row = []
            for j in range(len(cols) - 1):
                patch = x[..., rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
                if size is None:
                    row.append(self.net(patch))
                else:
                    row.append(self.net(patch, (out_rows[i + 1] - out_rows[i], out_cols[j + 1] - out_cols[j])))
            outs.append(row)
        return _fuse(outs)


def _fuse(outs: List[List[Any]]) -> Any:
    first = outs[0][0]
    if isinstance(first, (tuple, list)):
        return type(first)(_fuse([[o[n] for o in row] for row in outs]) for n in range(len(first)))
    if not isinstance(first, Tensor):
        raise TypeError(f'PatchFusion: cannot fuse outputs of type {type(first).__name__}')
    if first.dim() == 4:
        return torch.cat([torch.cat(row, dim=-1) for row in outs], dim=-2)
    return torch.stack([o for row in outs for o in row]).mean(0)


@OBJECTIVES.register_module()
class HPFF(LocalObjective):
    """HPFF: an independent term on module k + a cascade term through the live module k+1 (PFF).

    Args:
        base: the cascade objective, on module k+1's output (the task's greedy objective by
            default; the papers use ``dict(type='InfoPro', ...)``).
        independent: the objective on module k's own output (the task's greedy objective by default).
        independent_weight / cascade_weight: weights of the two terms (0.001 / 0.999 in the
            papers' CIFAR code); ``independent_weight=0`` builds no independent term (their
            ImageNet code).
        patches: PFF's grid (``patches x patches``) for the cascade objective's auxiliary nets
            (1: no patches).
        blocks: the blocks after the cut (filled in by the model).
        base_kwargs: the task's settings for the objectives (``ignore_index``).
    """

    takes_blocks = True
    reads_next_module = True
    trains_next_module = True
    nested_objectives: Tuple[str, ...] = ('base', 'independent')

    def __init__(self, in_channels: int, num_classes: int, base: Optional[dict] = None,
                 independent: Optional[dict] = None, independent_weight: float = 0.001,
                 cascade_weight: float = 0.999, patches: int = 2, blocks: Optional[LaterBlocks] = None,
                 module_index: int = 0, num_modules: int = 1, in_stride: int = 1, **base_kwargs) -> None:
        super().__init__(in_channels, num_classes, module_index=module_index, num_modules=num_modules,
                         in_stride=in_stride)
        if blocks is None:
            raise InputError('HPFF runs the next module after the cut; build it through a local model '
                             '(model.local_objective), not on its own')
        if blocks.first >= len(blocks.seq):
            raise InputError(f'HPFF: no block follows block {blocks.first - 1} of the backbone, so there is no next '
                             'module to cascade through')
        if not isinstance(patches, int) or patches < 1:
            raise InputError(f'model.local_objective.patches={patches!r} must be an integer >= 1')
        for name, w in (('independent_weight', independent_weight), ('cascade_weight', cascade_weight)):
            if not isinstance(w, (int, float)) or w < 0:
                raise InputError(f'model.local_objective.{name}={w!r} must be a number >= 0')
        if cascade_weight == 0:
            raise InputError('model.local_objective.cascade_weight=0 leaves only the independent term; use that '
                             'objective itself instead of HPFF')
        for name, cfg in (('base', base), ('independent', independent)):
            if cfg is None:  # the local model fills both with the task's greedy objective
                raise InputError(f'model.local_objective.{name} is required for HPFF')
            if takes_blocks(cfg.get('type')):
                raise InputError(f"model.local_objective.{name} cannot be {cfg.get('type')} (an objective on later "
                                 'blocks itself)')
        self.independent_weight, self.cascade_weight = float(independent_weight), float(cascade_weight)
        self.patches = patches
        self._later = blocks
        out = blocks.info(blocks.stop - 1)
        self.base = build_objective(dict(base_kwargs, **base), out.num_chs, num_classes, module_index, num_modules,
                                    in_stride=out.reduction)
        for name in ('head', 'decoder'):
            net = getattr(self.base, name, None)
            if patches > 1 and isinstance(net, nn.Module):
                setattr(self.base, name, PatchFusion(net, patches))
        self.independent = None
        if self.independent_weight > 0:
            self.independent = build_objective(dict(base_kwargs, **independent), in_channels, num_classes,
                                               module_index, num_modules, in_stride=in_stride)

    def extra_repr(self) -> str:
        return (f'cascade=blocks {self._later.first}..{self._later.stop - 1}, patches={self.patches}, '
                f'weights=({self.independent_weight:g}, {self.cascade_weight:g})')

    def loss(self, feat: Tensor, ctx: LocalContext) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if self.independent is not None:
            for n, v in self.independent.loss(self._later.to_map(feat, ctx.img_hw), ctx).items():
                losses[f'independent.{n}'] = self.independent_weight * v if 'loss' in n else v
        y = self._later.forward_next(feat)
        for n, v in self.base.loss(self._later.to_map(y, ctx.img_hw), ctx).items():
            losses[f'cascade.{n}'] = self.cascade_weight * v if 'loss' in n else v
        return losses
