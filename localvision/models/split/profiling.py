"""Measure what each block keeps alive for backward: the cost model of memory-balanced splits."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .block_sequence import BlockSequence

Tensor = torch.Tensor


class SavedTensorCounter:
    """Counts the bytes of distinct tensors autograd saves for backward (parameters excluded).

    Storages are deduplicated, so a tensor saved by several ops counts once; the graph must be
    kept alive while counting (addresses are then unique).
    """

    def __init__(self, exclude: Sequence[Tensor] = ()) -> None:
        self._seen = {t.untyped_storage().data_ptr() for t in exclude}
        self.nbytes = 0

    def _pack(self, t: Tensor) -> Tensor:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in self._seen:
            self._seen.add(key)
            self.nbytes += st.nbytes()
        return t

    @contextmanager
    def count(self) -> Iterator['SavedTensorCounter']:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


@contextmanager
def _preserved_state(module: nn.Module) -> Iterator[None]:
    """Train mode for the dry run, then restore buffers (BN statistics) and the mode."""
    was_training = module.training
    saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()
             if not isinstance(v, nn.Parameter)}
    module.train()
    try:
        yield
    finally:
        module.load_state_dict(saved, strict=False)
        module.train(was_training)


def profile_saved_bytes(seq: BlockSequence, input_shape: Sequence[int], batch_size: int = 2,
                        exit_loss: Optional[Callable[[int, Tensor], Tensor]] = None,
                        tail_loss: Optional[Callable[[Tensor], Tensor]] = None,
                        extra_modules: Sequence[nn.Module] = (),
                        device: Optional[torch.device] = None) -> Tuple[List[int], List[int], int]:
    """Dry-run one training forward and measure saved-for-backward bytes.

    Returns ``(block_bytes, exit_bytes, tail_bytes)``: the bytes each block saves, the bytes an
    auxiliary objective (``exit_loss(block_index, block_output)``) saves on each block's output,
    and what the final norm plus task head and loss (``tail_loss(last_output)``) save.
    """
    params = [p for p in seq.model.parameters()]
    for m in extra_modules:
        params.extend(m.parameters())
    counter = SavedTensorCounter(exclude=params)
    img_hw = tuple(input_shape[-2:])
    block_bytes: List[int] = []
    exit_bytes: List[int] = []
    keep: List[Tensor] = []  # keep graphs alive so storages are not reused while counting
    with _preserved_state(seq.model), torch.enable_grad():
        x = torch.randn(batch_size, *input_shape, device=device)
        for i, blk in enumerate(seq.blocks):
            before = counter.nbytes
            with counter.count():
                x = blk(x)
            block_bytes.append(counter.nbytes - before)
            if exit_loss is not None and i < len(seq.blocks) - 1:
                before = counter.nbytes
                with counter.count():
                    keep.append(exit_loss(i, seq.to_map(x.detach(), img_hw)))
                exit_bytes.append(counter.nbytes - before)
            else:
                exit_bytes.append(0)
        before = counter.nbytes
        with counter.count():
            y = seq.final_norm(x)
            if tail_loss is not None:
                keep.append(tail_loss(y))
        tail = counter.nbytes - before
    del keep, x
    return block_bytes, exit_bytes, tail
