"""Training-loop hooks."""
from __future__ import annotations

import json
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import all_gather_object, is_main_process
from mmengine.hooks import Hook

from localvision.registry import HOOKS
from localvision.utils.memory import PeakMemory, format_bytes


@HOOKS.register_module()
class PeakMemoryHook(Hook):
    """Measures the peak training memory of one iteration and logs it.

    At training iteration ``at_iter`` (counted from 0, after the optimizer state exists) the
    iteration (data preprocessing, forward, backward, step) runs under
    :class:`~localvision.utils.memory.LiveTensorMemoryTracker` on CPU (exact bytes of live
    tensors: parameters, gradients, optimizer state, batch and activations), or with the CUDA
    allocator's peak statistics on a GPU. The figure is logged, put in the message hub as
    ``train/peak_memory_bytes`` and written to ``<work_dir>/peak_memory.json``; under data
    parallelism every rank measures its own iteration and rank 0 logs them all (``per_rank``).

    Use from any scope: ``custom_hooks = [dict(type='localvision.PeakMemoryHook', at_iter=5)]``.
    """

    priority = 'VERY_LOW'

    def __init__(self, at_iter: int = 5) -> None:
        if at_iter < 1:
            raise ValueError(f'PeakMemoryHook.at_iter={at_iter} must be >= 1 (iteration 0 creates the optimizer state)')
        self.at_iter = at_iter
        self._peak: Optional[PeakMemory] = None
        self.peak_bytes: Optional[int] = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter != self.at_iter:
            return
        params = list(runner.model.parameters())
        device = params[0].device if params else torch.device('cpu')
        optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
        baseline = [runner.model] + ([optimizer] if optimizer is not None else []) + [data_batch]
        self._peak = PeakMemory(device, baseline).__enter__()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._peak is None:  # not the measured iteration
            return
        peak, self._peak = self._peak, None
        peak.__exit__(None, None, None)
        self.peak_bytes = peak.peak_bytes
        per_rank = all_gather_object(peak.peak_bytes)  # [peak] without a process group
        runner.message_hub.update_info('train/peak_memory_bytes', peak.peak_bytes)
        if len(per_rank) == 1:
            runner.logger.info(f'peak training memory (iteration {self.at_iter}): {format_bytes(peak.peak_bytes)}')
        else:
            runner.logger.info(f'peak training memory per rank (iteration {self.at_iter}): '
                               + ', '.join(f'rank {r}: {format_bytes(b)}' for r, b in enumerate(per_rank)))
        if is_main_process():
            with open(osp.join(runner.work_dir, 'peak_memory.json'), 'w') as f:
                json.dump(dict(peak_bytes=peak.peak_bytes, per_rank=per_rank, iteration=self.at_iter,
                               device=str(peak.device)), f)

    def after_train(self, runner) -> None:
        if self._peak is not None:  # training stopped inside the measured iteration
            self._peak.__exit__(None, None, None)
            self._peak = None
