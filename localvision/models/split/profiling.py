"""Measure what each block keeps alive for backward: the cost model of memory-balanced splits.

Also activation checkpointing (:func:`checkpointed`), which changes that cost: a checkpointed
block keeps only its input until its backward, where it recomputes its activations.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .block_sequence import BlockSequence

Tensor = torch.Tensor

_CHECKPOINTING = ContextVar('localvision_checkpointing', default=True)


@contextmanager
def checkpointing_suspended() -> Iterator[None]:
    """Run :func:`checkpointed` calls plainly (the profiler measures what they would save)."""
    token = _CHECKPOINTING.set(False)
    try:
        yield
    finally:
        _CHECKPOINTING.reset(token)


@contextmanager
def _batchnorm_stats_frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """BatchNorms in training mode normalise with the batch statistics but leave their running
    statistics as they are (momentum 0, batch count restored): a recomputation must not update
    them a second time. (Turning ``track_running_stats`` off instead would change what the op
    saves for backward, which checkpointing checks.)"""
    bns = [m for mod in modules for m in mod.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    state = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, state):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def checkpointed(fn: Callable[..., Tensor], *args, modules: Sequence[nn.Module] = ()) -> Tensor:
    """``fn(*args)`` under non-reentrant activation checkpointing when gradients are recorded.

    Only the inputs are kept for backward; ``fn`` runs again in the backward pass to rebuild its
    activations (same random state). The BatchNorms of ``modules`` (those ``fn`` runs) update
    their running statistics once, in the forward, so results equal those without checkpointing.
    """
    if not (torch.is_grad_enabled() and _CHECKPOINTING.get()):
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), _batchnorm_stats_frozen(modules)))


class SavedTensorCounter:
    """Counts the bytes of distinct tensors autograd saves for backward (parameters excluded).

    Storages are deduplicated (by address), so a tensor saved by several ops counts once; the
    counter keeps every tensor it saw alive while it lives, so no address is reused by a later
    tensor (which would then not be counted, depending on the allocator's history).
    """

    def __init__(self, exclude: Sequence[Tensor] = (), exclude_keys: Iterable[int] = ()) -> None:
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude} | set(exclude_keys)
        self._seen = set(self.excluded)
        self._alive: List[Tensor] = []
        self.nbytes = 0

    def _pack(self, t: Tensor) -> Tensor:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in self._seen:
            self._seen.add(key)
            self._alive.append(t)
            self.nbytes += st.nbytes()
        return t

    @contextmanager
    def count(self, *others: 'SavedTensorCounter') -> Iterator['SavedTensorCounter']:
        """Count what is saved inside the block (``others`` count it too)."""
        counters = (self, *others)

        def pack(t: Tensor) -> Tensor:
            for c in counters:
                c._pack(t)
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield self


@dataclass
class SplitProfile:
    """What a dry run measured, per block (bytes at the profiling batch size).

    Attributes:
        saved: what each block saves for backward (deduplicated along the whole network).
        inputs: the size of each block's input, which is all a checkpointed block keeps.
        recompute: what each block saves apart from its input (what its recomputation allocates).
        exits: what the auxiliary objective on each block's output saves (0 for the last block).
        tail: what the final norm plus the task heads and their losses save.
    """

    saved: List[int]
    inputs: List[int]
    recompute: List[int]
    exits: List[int]
    tail: int

    def module_cost(self, i: int, j: int, last: bool, checkpointing: bool = False, plain: int = 0) -> int:
        """Peak bytes of activations of a module of blocks ``i..j`` during its training step.

        Without checkpointing every block's saved tensors and the objective's (or, for the last
        module, the tail's) are alive when the backward starts. With checkpointing the blocks
        keep only their inputs: when the backward starts, the inputs and the objective's tensors
        are alive; the objective's backward frees its tensors, then the blocks are recomputed one
        at a time from the last, block b's recomputation beside the inputs of blocks ``i..b``
        (the later ones were freed by their backward). ``plain``: the module's last ``plain``
        blocks run without checkpointing (their saved tensors are alive with the objective's
        when the backward starts and are freed before the first recomputation).
        """
        end = self.tail if last else self.exits[j]
        if not checkpointing:
            return sum(self.saved[i:j + 1]) + end
        c = j + 1 - plain  # blocks i..c-1 checkpointed, c..j plain
        start = sum(self.inputs[i:c]) + sum(self.saved[c:j + 1]) + end
        kept, recomputing = 0, 0
        for b in range(i, c):
            kept += self.inputs[b]
            recomputing = max(recomputing, kept + self.recompute[b])
        return max(start, recomputing)

    def plain_blocks(self, i: int, j: int, last: bool) -> int:
        """How many of the last blocks of module ``i..j`` can run without checkpointing while the
        module's checkpointed cost stays what it is with every block checkpointed: no
        recomputation where it would not lower the module's own peak (the last block's activations
        are needed as soon as the backward starts). Compared within the module only, so an error of
        the cost model between modules (the task heads, gradients) cannot raise the split's peak."""
        own = self.module_cost(i, j, last, True)
        fits = [p for p in range(j - i + 2) if self.module_cost(i, j, last, True, p) <= own]
        return max(fits, default=0)


@contextmanager
def _train_mode(module: nn.Module) -> Iterator[None]:
    """Train mode for the dry run, then the mode as it was (:func:`_fixed_draw` restores the buffers)."""
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def _fixed_draw(modules: Sequence[nn.Module], seed: int, device: Optional[torch.device]) -> Iterator[None]:
    """Inside: the random state seeded with ``seed`` and every weight with a ``reset_parameters``
    redrawn from it; after: the weights and the random state as they were.

    What a dry run keeps for backward can depend on the values it computes (how many proposals
    match a box, and so how many RoIs a mask head runs on), so without this the run's seed, which
    drew the weights, could move the balanced cuts.
    """
    saved, seen = [], set()
    for mod in modules:
        for m in mod.modules():
            for name, t in list(m._parameters.items()) + list(m._buffers.items()):
                if t is None or id(t) in seen or nn.parameter.is_lazy(t):
                    continue
                seen.add(id(t))
                saved.append((m, name, t.detach().clone()))
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == 'cuda' else []):
        torch.manual_seed(seed)
        try:
            with torch.no_grad():
                for mod in modules:
                    for m in mod.modules():
                        reset = getattr(m, 'reset_parameters', None)
                        if callable(reset) and not any(nn.parameter.is_lazy(t) for t in m.parameters(recurse=False)):
                            reset()
            yield
        finally:
            with torch.no_grad():
                for m, name, value in saved:
                    getattr(m, name).copy_(value)


def _storage_bytes(t: Tensor) -> int:
    return t.untyped_storage().nbytes()


def profile_saved_bytes(seq: BlockSequence, input_shape: Sequence[int], batch_size: int = 2,
                        exit_loss: Optional[Callable[[int, Tensor], Tensor]] = None,
                        tail_loss: Optional[Callable[[Tensor], Tensor]] = None,
                        extra_modules: Sequence[nn.Module] = (),
                        device: Optional[torch.device] = None, seed: int = 0) -> SplitProfile:
    """Dry-run one training forward and measure saved-for-backward bytes (see :class:`SplitProfile`).

    ``exit_loss(block_index, block_output)`` is the auxiliary objective a module ending at that
    block would get (on the output as the block hands it on: a map, an NHWC map or tokens),
    ``tail_loss(last_output)`` the task heads and losses after the final norm.
    Checkpointed objectives run plainly here, so their full cost is measured.
    The dry run draws its input, the weights it runs with (those of ``seq.model`` and
    ``extra_modules``) and the objectives built during it from ``seed``, and leaves the weights, the
    buffers and the random state as it found them: the same config gives the same profile
    whatever the run's seed.
    """
    params = [p for p in seq.model.parameters()]
    for m in extra_modules:
        params.extend(m.parameters())
    counter = SavedTensorCounter(exclude=params)
    prof = SplitProfile([], [], [], [], 0)
    keep: List[Tensor] = []  # keep graphs alive so storages are not reused while counting
    with _fixed_draw([seq.model, *extra_modules], seed, device), _train_mode(seq.model), \
            torch.enable_grad(), checkpointing_suspended():
        x = torch.randn(batch_size, *input_shape, device=device)
        for i, blk in enumerate(seq.blocks):
            own = SavedTensorCounter(exclude=[x], exclude_keys=counter.excluded)
            prof.inputs.append(_storage_bytes(x))
            before = counter.nbytes
            with counter.count(own):
                x = blk(x)
            prof.saved.append(counter.nbytes - before)
            prof.recompute.append(own.nbytes)
            if exit_loss is not None and i < len(seq.blocks) - 1:
                before = counter.nbytes
                with counter.count():
                    keep.append(exit_loss(i, x.detach()))
                prof.exits.append(counter.nbytes - before)
            else:
                prof.exits.append(0)
        before = counter.nbytes
        with counter.count():
            y = seq.final_norm(x)
            if tail_loss is not None:
                keep.append(tail_loss(y))
        prof.tail = counter.nbytes - before
    del keep, x
    return prof
