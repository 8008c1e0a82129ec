"""Data-parallel training of split models: each unit's gradients are all-reduced as soon as its
backward is done, asynchronously, so module k's communication overlaps module k+1's compute.

Why not mmengine's ``MMDistributedDataParallel``: it does not call the model's own
``train_step``, and DDP prepares its reducer after ``forward()`` returns, so K backwards inside
one step would never be synchronised. :class:`LocalDistributedDataParallel` is registered in
mmengine's root ``MODEL_WRAPPERS`` (found from every scope: localvision, mmseg, mmdet), and
``localvision.utils.config.load_config`` selects it for localvision's task models.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.registry import MODEL_WRAPPERS

from localvision.structures.local_context import is_local_model

Tensor = torch.Tensor


class UnitGradSync:
    """Asynchronous all-reduce (mean) of the gradients of one unit at a time.

    ``launch(k)`` starts the all-reduce of unit k's gradients and returns at once; ``wait()``
    completes every launched all-reduce and leaves each parameter with its averaged gradient.
    Gradients of at least ``inplace_mb`` are reduced in place; smaller ones are moved (one at a
    time, so never held twice) into flat buckets of at most ``bucket_cap_mb`` to save calls. The
    extra memory is thus at most one bucket of small gradients, and the peak training memory of a
    rank stays that of single-process local training. Every rank launches the same buckets in the
    same order.
    """

    def __init__(self, units: Sequence[Sequence[nn.Parameter]], bucket_cap_mb: float = 25.0,
                 process_group=None, inplace_mb: float = 1.0) -> None:
        seen, self.units = set(), []
        for params in units:
            own = [p for p in params if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in own)
            self.units.append(own)
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        self.inplace_bytes = int(inplace_mb * 2**20)
        self.group = process_group
        self._pending: List[tuple] = []

    def _buckets(self, params: List[nn.Parameter]) -> List[List[nn.Parameter]]:
        """Large parameters alone (reduced in place), small ones packed by dtype and device."""
        buckets, cur, size, key = [], [], 0, None
        for p in params:
            nbytes = p.numel() * p.element_size()
            if nbytes >= self.inplace_bytes:
                buckets.append([p])
                continue
            k = (p.dtype, p.device)
            if cur and (size + nbytes > self.bucket_bytes or k != key):
                buckets.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += nbytes
            key = k
        if cur:
            buckets.append(cur)
        return buckets

    def launch(self, k: int) -> None:
        """Start the all-reduce of unit k's gradients."""
        for bucket in self._buckets(self.units[k]):
            if len(bucket) == 1:
                p = bucket[0]
                if p.grad is None:  # unused on this rank: contribute zeros, keep calls aligned
                    p.grad = torch.zeros_like(p)
                work = dist.all_reduce(p.grad, group=self.group, async_op=True)
                self._pending.append((work, p.grad, bucket, None))
                continue
            flat = torch.empty(sum(p.numel() for p in bucket), dtype=bucket[0].dtype, device=bucket[0].device)
            offset = 0
            for p in bucket:  # one gradient at a time into the bucket, then freed
                n = p.numel()
                if p.grad is None:
                    flat[offset:offset + n].zero_()
                else:
                    flat[offset:offset + n].copy_(p.grad.reshape(-1))
                    p.grad = None
                offset += n
            work = dist.all_reduce(flat, group=self.group, async_op=True)
            self._pending.append((work, flat, bucket, [p.shape for p in bucket]))

    def wait(self) -> None:
        """Complete every launched all-reduce; a bucketed gradient becomes a view of its bucket."""
        world = dist.get_world_size(self.group)
        for work, flat, bucket, shapes in self._pending:
            work.wait()
            flat.div_(world)
            if shapes is None:  # reduced in place
                continue
            offset = 0
            for p, shape in zip(bucket, shapes):
                n = shape.numel()
                p.grad = flat[offset:offset + n].view(shape)
                offset += n
        self._pending.clear()


@MODEL_WRAPPERS.register_module()
class LocalDistributedDataParallel(nn.Module):
    """Data parallelism for models trained unit by unit (:class:`~localvision.structures.LocalUnits`, K >= 1).

    Parameters and buffers are broadcast from rank 0 at wrap time; in ``train_step`` the
    executor launches the all-reduce of unit k's gradients right after unit k's backward
    (only on iterations that step, so gradient accumulation syncs once per step), and waits for
    them all before the optimizer step. ``val_step`` / ``test_step`` run the plain model.

    Args:
        module: the model.
        bucket_cap_mb: largest flattened gradient bucket.
        broadcast_buffers: broadcast rank 0's buffers (BN statistics) before every step, like
            DDP's option (mmengine's default for DDP is False).
    """

    def __init__(self, module: nn.Module, bucket_cap_mb: float = 25.0, broadcast_buffers: bool = False,
                 process_group=None, **kwargs) -> None:
        super().__init__()
        if not is_local_model(module):
            raise TypeError(f'LocalDistributedDataParallel wraps localvision task models; got '
                            f'{type(module).__name__} (use MMDistributedDataParallel for other models)')
        if kwargs:
            unknown = sorted(set(kwargs) - {'device_ids', 'find_unused_parameters', 'output_device'})
            if unknown:
                raise TypeError(f'LocalDistributedDataParallel got unknown arguments {unknown}')
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.group = process_group
        self._broadcast(list(module.parameters()) + list(module.buffers()))
        units = [module.unit_parameters(k) for k in range(module.num_units)]
        covered = {id(p) for u in units for p in u}
        rest = [p for p in module.parameters() if id(p) not in covered]
        if rest:  # parameters no unit claims (none in localvision's models) sync with the last unit
            units[-1] = list(units[-1]) + rest
        self.grad_sync = UnitGradSync(units, bucket_cap_mb, process_group)

    def _broadcast(self, tensors: List[Tensor]) -> None:
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0, group=self.group)

    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        if self.broadcast_buffers:
            self._broadcast([b for b in self.module.buffers() if b.is_floating_point() or b.numel()])
        return self.module.train_step(data, optim_wrapper, grad_sync=self.grad_sync)

    def val_step(self, data) -> list:
        return self.module.val_step(data)

    def test_step(self, data) -> list:
        return self.module.test_step(data)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
