"""Data position and RNG of a module-parallel run: where stage 0 reads, and how a resume continues.

Stage 0 of each replica reads its own shard of the training set (:class:`ReplicaSampler`),
epoch after epoch, in global batches of ``train_dataloader.batch_size`` that it cuts into
micro-batches (:func:`split_micro`). A checkpoint holds the iteration and the RNG states of every
replica (:func:`rng_state`, :func:`gather_rng_states`); :class:`TrainBatches` resumes from it: the
same epoch, the batches already trained skipped, the same RNG, so a resumed run draws exactly the
crops and flips of the uninterrupted one.
"""
from __future__ import annotations

import copy
import math
import random
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dataset import DefaultSampler

from localvision.errors import InputError


class ReplicaSampler(DefaultSampler):
    """``DefaultSampler`` sharding over the R replicas of the grid (not over all ranks), with a
    number of leading samples to skip in the current epoch (resume)."""

    def __init__(self, dataset, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.epoch, self.round_up, self.skip = 0, True, 0
        self.num_samples = math.ceil(len(dataset) / world_size)
        self.total_size = self.num_samples * world_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start epoch ``epoch`` after its first ``skip`` samples (of this shard)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def build_train_loader(cfg, replica: int, replicas: int, seed: int):
    """The training data loader of replica ``replica``: ``cfg.train_dataloader`` with its sampler
    sharded over the replicas and ``drop_last=True`` (every global batch has M full micro-batches)."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    sampler = dict(loader_cfg.get('sampler') or {})
    loader_cfg['sampler'] = dict(type=ReplicaSampler, shuffle=sampler.get('shuffle', True), seed=seed,
                                 rank=replica, world_size=replicas)
    loader_cfg['drop_last'] = True
    return Runner.build_dataloader(loader_cfg, seed=seed)


def split_micro(data: Dict[str, Any], m: int) -> List[Dict[str, Any]]:
    """A preprocessed batch cut into ``m`` equal micro-batches (inputs and data samples)."""
    n = data['inputs'].shape[0]
    if n % m:
        raise InputError(f'a batch of {n} samples cannot be cut into pipeline.micro_batches={m} equal parts')
    b = n // m
    out = []
    for j in range(m):
        ds = data.get('data_samples')
        out.append(dict(inputs=data['inputs'][j * b:(j + 1) * b],
                        data_samples=None if ds is None else ds[j * b:(j + 1) * b]))
    return out


# -- RNG ---------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore :func:`rng_state` (also after a round trip through a checkpoint: lists for tuples)."""
    random.setstate(_tuplify(state['python']))
    np.random.set_state(_tuplify(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def gather_rng_states(replicas: int, group=None) -> List[Dict[str, Any]]:
    """The RNG states of the R replicas of this stage, in replica order (collective over ``group``)."""
    state = rng_state()
    if replicas == 1:
        return [state]
    out: List[Any] = [None] * replicas
    dist.all_gather_object(out, state, group=group)
    return out


def saved_rng(stage_state: Optional[Dict[str, Any]], replica: int) -> Optional[Dict[str, Any]]:
    """Replica ``replica``'s RNG state in a stage checkpoint (``None``: none saved)."""
    if stage_state is None:
        return None
    rngs = stage_state.get('rng') or []
    return rngs[replica] if replica < len(rngs) else None


# -- stage 0's batches ---------------------------------------------------------------------------
class TrainBatches:
    """Stage 0's raw training batches from iteration ``start_iter`` on, epoch after epoch.

    Args:
        cfg: the full config (``train_dataloader``).
        replica: this replica (the shard of the training set it reads).
        replicas: R.
        seed: the run's seed (sampler order, worker seeds).
        start_iter: the iteration to continue from (0, or the checkpoint's).
        rng: the RNG state saved with that checkpoint, restored before the first batch is drawn.
        batch_source: instead of the data loader, an iterable of raw batches (the benchmark);
            ``iters_per_epoch`` must then be given.
    """

    def __init__(self, cfg, replica: int, replicas: int, seed: int, start_iter: int = 0,
                 rng: Optional[Dict[str, Any]] = None, batch_source: Optional[Iterable] = None,
                 iters_per_epoch: Optional[int] = None) -> None:
        self._peeked: List[Any] = []
        if batch_source is not None:
            if not iters_per_epoch:
                raise InputError('a batch_source needs iters_per_epoch')
            self.iters_per_epoch = iters_per_epoch
            self.loader = self.sampler = None
            self._iter = iter(batch_source)
            return
        bs = cfg.train_dataloader.batch_size
        self.loader = build_train_loader(cfg, replica, replicas, seed)
        batch_sampler = getattr(self.loader, 'batch_sampler', None)
        self.sampler = self.loader.sampler if batch_sampler is None else batch_sampler.sampler
        self.iters_per_epoch = self.sampler.num_samples // bs
        if self.iters_per_epoch == 0:
            raise InputError(f'the training set ({len(self.loader.dataset)} samples) has fewer than '
                             f'replicas x batch_size = {replicas} x {bs} samples')
        self.epoch, self._within = divmod(start_iter, self.iters_per_epoch)
        if self._within:  # mid-epoch: skip what was trained, then continue with the saved RNG
            self.sampler.set_epoch(self.epoch, skip=self._within * bs)
            self._iter = iter(self.loader)
            if rng is not None:
                set_rng_state(rng)
        else:
            if rng is not None:
                set_rng_state(rng)
            self.sampler.set_epoch(self.epoch)
            self._iter = iter(self.loader)

    def peek(self) -> Any:
        """The next batch, left for the next :func:`next` to return."""
        if not self._peeked:
            self._peeked.append(self._fetch())
        return self._peeked[0]

    def __iter__(self) -> 'TrainBatches':
        return self

    def __next__(self) -> Any:
        return self._peeked.pop() if self._peeked else self._fetch()

    def _fetch(self) -> Any:
        if self.loader is not None:
            if self._within == self.iters_per_epoch:
                self.epoch += 1
                self.sampler.set_epoch(self.epoch)
                self._iter = iter(self.loader)
                self._within = 0
            self._within += 1
        return next(self._iter)
