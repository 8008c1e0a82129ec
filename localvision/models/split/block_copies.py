"""Later blocks of the backbone, as auxiliary objectives that build on them see them.

AugLocal builds module k's auxiliary net from blocks sampled among those after the cut, and MAN
from the first block of module k+1 (an EMA copy that follows the live block, and a learnable
copy). :class:`LaterBlocks` is what the mechanism hands such an objective: the block sequence
after the cut, fresh copies of any of its blocks (:func:`copy_blocks`), and the live blocks
themselves (read only, never owned by the objective).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .block_sequence import BlockInfo, BlockSequence, run_blocks, to_block_sequence

Tensor = torch.Tensor


def copy_blocks(seq: BlockSequence, indices: Sequence[int]) -> BlockSequence:
    """A twin of ``seq`` whose blocks ``indices`` are copies; every other part is shared.

    The copies own new parameters (the modules in ``twin.infos[i].modules``, which the caller
    registers); everything else the blocks' forwards read (position embeddings, shared rotary
    tables, the model's other submodules) stays the live model's, so a copy costs only its
    blocks. Works for every family the block reader accepts (the twin model is read again with
    :func:`to_block_sequence`), and a deep copy of the twin (of a model holding it) is a twin of
    the copied model (``BlockSequence.__deepcopy__``).
    """
    targets = {id(m) for i in indices for m in seq.infos[int(i)].modules}
    memo: Dict[int, object] = {}

    def visit(m: nn.Module) -> bool:
        """Share what holds no target; returns whether ``m`` is or holds a target."""
        if id(m) in targets:
            return True
        holds = [visit(c) for c in m.children()]
        if any(holds):
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None:
                    memo[id(t)] = t
            return True
        memo[id(m)] = m
        return False

    visit(seq.model)
    return seq.reread(copy.deepcopy(seq.model, memo), memo)


def reset_parameters(modules: Sequence[nn.Module]) -> None:
    """A fresh PyTorch initialisation of every submodule that has one (convs, linears, norms)."""
    for root in modules:
        for m in root.modules():
            fn = getattr(m, 'reset_parameters', None)
            if callable(fn):
                fn()


class LaterBlocks:
    """The blocks after a cut, for an objective that builds on them (AugLocal, MAN, HPFF).

    Args:
        seq: the backbone's block sequence (its ``infos`` filled with channels and strides).
        first: index of the first block after the cut (the next module's first block).
        stop: one past the next module's last block (default ``first + 1``: while the split is
            being profiled the next module is not known yet, and one block stands for it).
        next_module: the backbone's forward of the next module (``StagedTimm.forward_module`` of
            module k+1: its blocks as the backbone runs them, checkpointing included); default its
            blocks ``first..stop-1`` run plainly (:func:`run_blocks`).
    """

    def __init__(self, seq: BlockSequence, first: int, stop: Optional[int] = None,
                 next_module: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.seq = seq
        self.first = int(first)
        self.stop = self.first + 1 if stop is None else int(stop)
        self._next_module = next_module

    def info(self, i: int) -> BlockInfo:
        """Block ``i`` (a flat index of the backbone)."""
        return self.seq.infos[i]

    def input_info(self, i: int) -> BlockInfo:
        """What block ``i`` reads: the output of block ``i - 1``."""
        return self.seq.infos[i - 1]

    def copies(self, indices: Sequence[int], fresh: bool = True) -> BlockSequence:
        """A twin sequence whose blocks ``indices`` are copies (see :func:`copy_blocks`);
        ``fresh``: the copies re-initialised (else they start from the live weights)."""
        twin = copy_blocks(self.seq, indices)
        if fresh:
            for i in indices:
                reset_parameters(twin.infos[i].modules)
        return twin

    def live_modules(self, i: int) -> List[nn.Module]:
        """The live modules of block ``i`` (read them; do not register or train them)."""
        return list(self.seq.infos[i].modules)

    def to_map(self, x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
        return self.seq.to_map(x, img_hw)

    def forward_next(self, x: Tensor) -> Tensor:
        """The live next module on ``x`` (and the final norm when it ends the backbone), as the
        backbone runs it; gradients reach its live weights."""
        if self._next_module is not None:
            return self._next_module(x)
        return run_blocks(self.seq, x, self.first, self.stop - 1, apply_final_norm=self.stop >= len(self.seq))
