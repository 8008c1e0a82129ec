"""Module-parallel training: module k of a split model on process (device) k, streaming
micro-batches forward with no backward communication.

Gradient isolation means unit k never needs a gradient from unit k+1. Stage k receives the
detached output of stage k-1 (with whatever context later units read: labels, the image, ContSup's
remembered inputs), runs ``forward_unit(k)``, sends its detached output on at once, then runs its
backward and, when due, its own optimizer step. Stage 0 runs the data loader and the data
preprocessor.

Schedules (``pipeline.schedule``):

- ``'sync'``: every stage accumulates the gradients of the M micro-batches of a global batch and
  steps once. Parameters equal those of the single-process run (``PerModuleBackward`` with
  ``accumulative_counts=M`` over the same micro-batches), up to float order. No pipeline flush is
  needed: stage k's weights only change by stage k's own step, so stage k can start global batch
  t+1 while stage k+1 still works on batch t and the result is still the sequential one.
- ``'async'``: every stage steps every ``step_every`` micro-batches; no stage ever waits for a
  global batch to end.

Both run under the bounded queue of :mod:`.transport`: stage k is at most ``queue_size``
micro-batches ahead of stage k+1. With ``replicas`` R > 1 the K x R ranks form a grid; the R ranks
of a stage all-reduce that stage's gradients before each step (data parallelism per stage).

**Interrupt.** Ctrl-C or SIGTERM (torchrun passes either on to every rank; a signal that reaches
one rank is spread by the watchdog) does not kill a stage
(:class:`~localvision.engine.interrupt.StopOnSignal`): stage 0 finishes the iteration in
progress and sends a *stop* message down the pipeline instead of the next micro-batch; every stage
drains what is in flight, reaches the same iteration boundary, and saves its checkpoint there, so
``--resume`` continues with nothing lost.

**Validation** follows ``train_cfg.val_interval`` (epochs, or iterations for iteration-based
training) and ``val_begin``: at such a boundary every stage saves its checkpoint, and the last
stage of replica 0 merges the stage files into a full model and evaluates it with
``val_dataloader`` / ``val_evaluator`` while the other stages run ahead as far as the queues allow.
The final validation is that of the exported checkpoint (``pipeline.val_at_end``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import os.path as osp
import random
import sys
import time
import traceback
from collections import defaultdict
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dataset import DefaultSampler

from localvision.engine.interrupt import StopOnSignal
from localvision.errors import InputError
from localvision.utils.memory import PeakMemory
from localvision.structures.local_context import LocalContext

from . import checkpoint as ckpt_io
from .config import PipelineConfig, check_pipeline_cfg
from .stage import (fields_to_send, ownership, owned_state, release_foreign, restrict_optimizer,
                    sendable_extras, trace_units)
from .topology import Topology, build_topology
from .transport import Receiver, Sender, TransportError
from .watchdog import PipelineAbort, Watchdog

Tensor = torch.Tensor


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
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


@contextlib.contextmanager
def _quiet():
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(cfg):
    """The task model as ordinary training builds it (registry, then ``init_weights``)."""
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    if hasattr(model, 'init_weights'):
        with _quiet():  # mmengine's per-parameter initialisation report: thousands of lines
            model.init_weights()
    return model


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


def _rng_state() -> Dict[str, Any]:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_tuplify(state['python']))
    np.random.set_state(_tuplify(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _module_label(model, k: int) -> str:
    bb = getattr(model, 'backbone', None)
    try:
        r = bb.module_ranges()[k]
        a, b = bb.seq.infos[r[0]].name, bb.seq.infos[r[-1]].name
        return f'module {k}: blocks {a}..{b}'
    except Exception:  # noqa: BLE001 - a model without a StagedTimm backbone
        return f'module {k}'


class PipelineRunner:
    """One rank of the grid: builds the model, keeps its stage, trains it (see the module doc).

    Args:
        cfg: the full config (``pipeline``, ``model``, ``train_dataloader``, ``optim_wrapper``,
            ``param_scheduler``, ``train_cfg``, ``default_hooks``...).
        pc: the validated ``cfg.pipeline``.
        batch_source: instead of the data loader, an iterable of raw batches for stage 0 (the
            benchmark); ``iters_per_epoch`` must then be given.
        profile_memory_iter: measure the live-tensor (CPU) or allocator (CUDA) peak of this iteration.
    """

    def __init__(self, cfg, pc: PipelineConfig, batch_source: Optional[Iterable] = None,
                 iters_per_epoch: Optional[int] = None, profile_memory_iter: Optional[int] = None) -> None:
        self.cfg, self.pc = cfg, pc
        self.batch_source, self._ipe_given = batch_source, iters_per_epoch
        self.profile_memory_iter = profile_memory_iter
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.work_dir = osp.abspath(cfg.work_dir)
        os.makedirs(self.work_dir, exist_ok=True)
        self.log_dir = osp.join(self.work_dir, 'pipeline_logs')
        os.makedirs(self.log_dir, exist_ok=True)
        backend = dist.get_backend()
        if torch.cuda.is_available():
            self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        else:
            self.device = torch.device('cpu')
        self.comm_device = self.device if backend == 'nccl' else torch.device('cpu')
        self.watchdog: Optional[Watchdog] = None
        self.where = f'rank {self.rank}'
        self.position = (None, None)
        self.summary: Dict[str, Any] = {}
        self.signals = StopOnSignal(announce=self.rank == 0)  # installed while train() runs
        self.interrupted_at: Optional[int] = None
        self._saved_at: Optional[int] = None
        self._val = None  # (data loader, evaluator), built at the first validation

    # -- set-up ----------------------------------------------------------------------------
    def _describe_rank(self, rank: int) -> str:
        k = rank % self.K
        return f'stage {k} ({_module_label(self.model, k)}) on rank {rank}'

    def setup(self) -> None:
        from mmengine.registry import init_default_scope
        from mmengine.runner import set_random_seed

        from localvision.utils.setup_env import register_all_modules
        cfg, pc = self.cfg, self.pc
        register_all_modules(init_default_scope=False)
        init_default_scope(cfg.get('default_scope', 'localvision'))
        randomness = dict(cfg.get('randomness') or {})
        seed = randomness.get('seed')
        if seed is None:
            from mmengine.dist import sync_random_seed
            seed = sync_random_seed()
        self.seed = seed
        set_random_seed(seed, deterministic=randomness.get('deterministic', False))
        model = build_model(cfg)
        if cfg.get('load_from') and not cfg.get('resume'):
            from mmengine.runner import load_checkpoint
            load_checkpoint(model, cfg.load_from, map_location='cpu')
        self.model = model
        self.K = model.num_units
        self.cuts = list(getattr(getattr(model, 'backbone', None), 'cuts', []) or []) or None
        self.topo: Topology = build_topology(self.K, pc.replicas)
        self.stage = self.topo.stage
        self.where = self._describe_rank(self.rank)
        self.watchdog = Watchdog(self.rank, self.world, self._describe_rank, pc.heartbeat_timeout,
                                 stop_source=lambda: self.signals.requested).start()
        self.all_keys = list(model.state_dict().keys())

        # resume: which iteration, this stage's saved state
        self.start_iter, self.resume_state, self.manifest_path = 0, None, None
        if cfg.get('resume'):
            self.manifest_path = ckpt_io.resolve_manifest(cfg.get('load_from') or 'auto', self.work_dir)
            manifest = ckpt_io.load_manifest(self.manifest_path)
            ckpt_io.check_compatible(manifest, self.K, self.cuts, self.manifest_path)
            self.start_iter = int(manifest['iteration'])
            self.resume_state = ckpt_io.load_torch(osp.join(manifest['folder'], ckpt_io.stage_file(self.stage)))

        # stage 0: data; global rank 0: trace the units on the first micro-batch
        first = None
        info: List[Any] = [None]
        if self.topo.is_first:
            self.bs = cfg.train_dataloader.batch_size
            self._open_data()
            first = self._next_batch()
            if self.rank == 0:
                data = model.data_preprocessor(copy.deepcopy(first), True)
                micro = split_micro(data, pc.micro_batches)[0]
                info[0] = dict(ipe=self.ipe, trace=trace_units(model, micro['inputs'], micro['data_samples']))
        dist.broadcast_object_list(info, src=0)
        self.ipe = info[0]['ipe']
        self._first_batch = first
        trace = info[0]['trace']
        self.reads = trace['reads']
        self.send_fields = fields_to_send(self.reads, self.stage)
        self.param_owner, self.key_owner, self.unclaimed = ownership(model, trace['callers'])
        k_last = self.K - 1
        owned = [p for p in model.parameters() if self.param_owner.get(id(p), k_last) == self.stage]
        self.owned_params = owned

        # total length, optimizer (this stage's parameters only), schedulers
        train_cfg = dict(cfg.get('train_cfg') or {})
        if train_cfg.get('max_iters') is not None:
            self.total_iters, self.by_epoch = int(train_cfg['max_iters']), False
        elif train_cfg.get('max_epochs') is not None:
            self.total_iters, self.by_epoch = int(train_cfg['max_epochs']) * self.ipe, True
        else:
            raise InputError('pipeline training needs train_cfg.max_epochs or train_cfg.max_iters')
        if self.start_iter > self.total_iters:
            raise InputError(f'the checkpoint is at iteration {self.start_iter}, beyond train_cfg '
                             f'({self.total_iters} iterations)')
        from mmengine.optim import build_optim_wrapper
        ow_cfg = copy.deepcopy(cfg.optim_wrapper)
        self.acc = int(ow_cfg.get('accumulative_counts', 1)) * pc.micros_per_step
        ow_cfg['accumulative_counts'] = self.acc
        self.optim_wrapper = build_optim_wrapper(model, ow_cfg)
        restrict_optimizer(self.optim_wrapper, {id(p) for p in owned})
        self.freed_bytes = 0
        if pc.release_foreign:
            self.freed_bytes = release_foreign(model, self.param_owner, self.key_owner, self.stage,
                                               keep=self.unclaimed)
        model.to(self.device)
        model.train()
        self.micros_per_iter = pc.micro_batches if pc.schedule == 'sync' else pc.step_every
        self.sched_iters_per_epoch = self.ipe * pc.micro_batches // self.micros_per_iter
        self.schedulers = self._build_schedulers()
        with _quiet():  # mmengine warns that accumulation and BatchNorm mix (micro-batch statistics: intended)
            self.optim_wrapper.initialize_count_status(
                model, self.start_iter * pc.micro_batches, self.total_iters * pc.micro_batches)
        self.grad_sync = None
        if self.topo.replicas > 1:
            from localvision.engine.distributed import UnitGradSync
            self._broadcast_owned()
            self.grad_sync = UnitGradSync([owned], process_group=self.topo.dp_group)
        if self.resume_state is not None:
            self._load_resume_state()

    def _build_schedulers(self) -> list:
        from mmengine.registry import PARAM_SCHEDULERS
        cfgs = self.cfg.get('param_scheduler') or []
        cfgs = [cfgs] if isinstance(cfgs, dict) else list(cfgs)
        max_epochs = math.ceil(self.total_iters / self.ipe)
        max_iters = self.total_iters * self.pc.micro_batches // self.micros_per_iter
        out = []
        for c in cfgs:
            c = copy.deepcopy(dict(c))
            c.setdefault('end', max_epochs if c.get('by_epoch', True) else max_iters)
            out.append(PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=self.optim_wrapper,
                                                                   epoch_length=self.sched_iters_per_epoch)))
        return out

    def _broadcast_owned(self) -> None:
        src = self.topo.rank_of(0, self.stage)
        with torch.no_grad():
            for p in self.owned_params:
                dist.broadcast(p.data, src=src, group=self.topo.dp_group)
            for key, t in self.model.state_dict(keep_vars=True).items():
                if self.key_owner.get(key) == self.stage and t.numel() and not isinstance(t, torch.nn.Parameter):
                    dist.broadcast(t.data, src=src, group=self.topo.dp_group)

    # -- data (stage 0) ------------------------------------------------------------------------
    def _open_data(self) -> None:
        if self.batch_source is not None:
            if not self._ipe_given:
                raise InputError('a batch_source needs iters_per_epoch')
            self.ipe = self._ipe_given
            self._iter = iter(self.batch_source)
            return
        self.loader = build_train_loader(self.cfg, self.topo.replica, self.pc.replicas, self.seed)
        sampler = self.loader.sampler if not hasattr(self.loader, 'batch_sampler') or \
            self.loader.batch_sampler is None else self.loader.batch_sampler.sampler
        self.sampler = sampler
        self.ipe = sampler.num_samples // self.bs
        if self.ipe == 0:
            raise InputError(f'the training set ({len(self.loader.dataset)} samples) has fewer than '
                             f'replicas x batch_size = {self.pc.replicas} x {self.bs} samples')
        epoch, within = divmod(self.start_iter, self.ipe)
        self.epoch = epoch
        saved = self._saved_rng()
        if within:  # mid-epoch: skip what was trained, then continue with the saved RNG
            sampler.set_epoch(epoch, skip=within * self.bs)
            self._iter = iter(self.loader)
            if saved is not None:
                _set_rng_state(saved)
        else:
            if saved is not None:
                _set_rng_state(saved)
            sampler.set_epoch(epoch)
            self._iter = iter(self.loader)
        self._within = within

    def _saved_rng(self):
        if self.resume_state is None:
            return None
        rngs = self.resume_state.get('rng') or []
        return rngs[self.topo.replica] if self.topo.replica < len(rngs) else None

    def _next_batch(self):
        if self.batch_source is not None:
            return next(self._iter)
        if self._within == self.ipe:
            self.epoch += 1
            self.sampler.set_epoch(self.epoch)
            self._iter = iter(self.loader)
            self._within = 0
        self._within += 1
        return next(self._iter)

    # -- resume / checkpoint -------------------------------------------------------------------------
    def _load_resume_state(self) -> None:
        st = self.resume_state
        keys = set(self.all_keys)
        missing = [k for k, o in self.key_owner.items() if o == self.stage and k in keys and k not in st['state_dict']]
        if missing:
            raise InputError(f'the checkpoint of stage {self.stage} misses {missing[:3]}')
        self.model.load_state_dict(st['state_dict'], strict=False)
        self.optim_wrapper.load_state_dict(st['optimizer'])
        for s, sd in zip(self.schedulers, st.get('param_schedulers', [])):
            s.load_state_dict(sd)
        if not self.topo.is_first and self._saved_rng() is not None:
            _set_rng_state(self._saved_rng())

    def _gather_rng(self) -> list:
        state = _rng_state()
        if self.topo.replicas == 1:
            return [state]
        out = [None] * self.topo.replicas
        dist.all_gather_object(out, state, group=self.topo.dp_group)
        return out

    def save_checkpoint(self, iteration: int) -> None:
        self._saved_at = iteration
        rngs = self._gather_rng()
        if self.topo.replica != 0:
            return
        folder = ckpt_io.iter_dir(self.work_dir, iteration)
        os.makedirs(folder, exist_ok=True)
        payload = dict(stage=self.stage, iteration=iteration,
                       state_dict=owned_state(self.model, self.key_owner, self.stage),
                       optimizer=self.optim_wrapper.state_dict(),
                       param_schedulers=[s.state_dict() for s in self.schedulers], rng=rngs)
        ckpt_io.save_torch(payload, osp.join(folder, ckpt_io.stage_file(self.stage)))
        n = int(self.watchdog._main.add(self.watchdog._key(f'ckpt/{iteration}'), 1))
        if n == self.K:  # the last stage to finish writes the manifest
            manifest = dict(version=ckpt_io.VERSION, iteration=iteration, epoch=iteration // self.ipe,
                            iters_per_epoch=self.ipe, num_stages=self.K, replicas=self.topo.replicas,
                            schedule=self.pc.schedule, micro_batches=self.pc.micro_batches, cuts=self.cuts,
                            stages=[dict(stage=k, file=ckpt_io.stage_file(k)) for k in range(self.K)],
                            keys=self.all_keys, cfg=self.cfg.pretty_text if hasattr(self.cfg, 'pretty_text') else None,
                            time=time.strftime('%Y-%m-%d %H:%M:%S'))
            ckpt_io.write_manifest(folder, manifest, self.work_dir)
            self.last_manifest = osp.join(folder, ckpt_io.MANIFEST)
            keep = (self.cfg.get('default_hooks') or {}).get('checkpoint', {}) or {}
            ckpt_io.prune(self.work_dir, keep.get('max_keep_ckpts', -1))

    def _is_val_point(self, done: int) -> bool:
        """Validate after iteration ``done`` (``train_cfg.val_interval`` / ``val_begin``; the end
        of training is validated on the exported checkpoint instead)."""
        train_cfg = dict(self.cfg.get('train_cfg') or {})
        if done >= self.total_iters or not (self.cfg.get('val_dataloader') and self.cfg.get('val_evaluator')):
            return False
        interval, begin = int(train_cfg.get('val_interval', 1)), int(train_cfg.get('val_begin', 1))
        if self.by_epoch:
            epoch, within = divmod(done, self.ipe)
            return within == 0 and epoch >= begin and epoch % interval == 0
        return done >= begin and done % interval == 0

    @property
    def validates(self) -> bool:
        """This rank runs the validations: the last stage (it reaches a boundary last) of replica 0."""
        return self.topo.is_last and self.topo.replica == 0

    def validate_now(self, iteration: int) -> Dict[str, float]:
        """Merge the stage checkpoints of ``iteration`` into a full model and evaluate it on
        ``val_dataloader`` (RNG state untouched, the full model freed afterwards)."""
        from mmengine.evaluator import Evaluator
        from mmengine.registry import MODELS
        from mmengine.runner import Runner
        manifest = osp.join(ckpt_io.iter_dir(self.work_dir, iteration), ckpt_io.MANIFEST)
        deadline = time.time() + 600
        while not osp.isfile(manifest):  # the other stages' files of this iteration
            self.watchdog.check_abort()
            if time.time() > deadline:
                raise RuntimeError(f'the checkpoint of iteration {iteration} was not completed within 10 minutes')
            time.sleep(0.05)
        rng = _rng_state()
        t0 = time.perf_counter()
        try:
            if self._val is None:
                loader_cfg = copy.deepcopy(self.cfg.val_dataloader)
                shuffle = dict(loader_cfg.get('sampler') or {}).get('shuffle', False)
                # the whole set on this one rank (DefaultSampler would take this rank's shard of K x R)
                loader_cfg['sampler'] = dict(type=ReplicaSampler, shuffle=shuffle, seed=self.seed, rank=0,
                                             world_size=1)
                loader = Runner.build_dataloader(loader_cfg, seed=self.seed)
                evaluator = Evaluator(copy.deepcopy(self.cfg.val_evaluator))
                evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
                self._val = (loader, evaluator)
            loader, evaluator = self._val
            model = MODELS.build(copy.deepcopy(self.cfg.model))
            model.load_state_dict(ckpt_io.merged_state_dict(manifest))
            model.to(self.device).eval()
            with torch.no_grad():
                for batch in loader:
                    evaluator.process(data_samples=model.val_step(batch), data_batch=batch)
            metrics: Dict[str, float] = {}
            for metric in evaluator.metrics:  # BaseMetric.evaluate without collect_results: one rank evaluates
                res = metric.compute_metrics(metric.results)
                metric.results.clear()
                metrics.update({(f'{metric.prefix}/{k}' if metric.prefix else k): float(v) for k, v in res.items()})
            del model
        finally:
            _set_rng_state(rng)
        body = '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items())
        print(f'Pipeline(val) [{iteration}/{self.total_iters}] {body}  time: {time.perf_counter() - t0:.1f} s',
              flush=True)
        with open(osp.join(self.log_dir, 'val.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=iteration, **metrics)) + '\n')
        self.summary.setdefault('val_history', []).append(dict(iter=iteration, **metrics))
        return metrics

    def _stop_now(self) -> bool:
        """Stage 0 at an iteration boundary: end the run here? (every replica decides the same)"""
        stop = self.signals.requested is not None or self.watchdog.stop_requested is not None
        if self.topo.replicas > 1:
            flag = torch.tensor([int(stop)], device=self.comm_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.topo.dp_group)
            stop = bool(flag.item())
        return stop

    def _stop_at(self, it: int, send) -> None:
        """End the run before iteration ``it``; tell the next stage (a stop in place of its data)."""
        self.interrupted_at = it
        if send is not None:
            send.send({}, control=dict(stop=it))

    def _ckpt_every(self) -> int:
        hook = dict((self.cfg.get('default_hooks') or {}).get('checkpoint') or {})
        interval = int(hook.get('interval', 1))
        if hook.get('by_epoch', True) and self.by_epoch:
            return max(interval * self.ipe, 1)
        return max(interval, 1)

    # -- the loop -----------------------------------------------------------------------------
    def _context_from(self, msg: Dict[str, Any]) -> LocalContext:
        fields = dict(msg['ctx'])
        if 'inputs' not in fields:
            fields['inputs'] = torch.empty(0, device=self.device)
        return LocalContext(**fields, extras=msg['extras'])

    def _log(self, it: int, stats: Dict[str, float], n: int, t_iter: float) -> None:
        rec = dict(iter=it, stage=self.stage, replica=self.topo.replica, time=t_iter,
                   lr=self.optim_wrapper.get_lr()['lr'][0] if self.optim_wrapper.param_groups else None)
        rec.update({k: v / n for k, v in stats.items()})
        self._jsonl.write(json.dumps(rec) + '\n')
        self._jsonl.flush()  # readable while training runs
        interval = int(((self.cfg.get('default_hooks') or {}).get('logger') or {}).get('interval', 10))
        if self.topo.replica == 0 and (it % interval == 0 or it == self.total_iters):
            body = '  '.join(f'{k}: {v:.4f}' for k, v in rec.items() if k not in ('iter', 'stage', 'replica'))
            print(f'Pipeline(train) [{it}/{self.total_iters}] stage {self.stage}: {body}', flush=True)

    def _loop(self) -> None:
        pc, model, ow, k = self.pc, self.model, self.optim_wrapper, self.stage
        M = pc.micro_batches
        n_msgs = (self.total_iters - self.start_iter) * M
        recv = send = None
        if not self.topo.is_first:
            recv = Receiver(self.topo.in_link, self.topo.prev_rank, self.topo.in_credit, n_msgs, self.comm_device,
                            self.device, check_abort=self.watchdog.check_abort)
        if not self.topo.is_last:
            send = Sender(self.topo.out_link, self.topo.next_rank, self.topo.out_credit, pc.queue_size,
                          self.comm_device)
        self._recv, self._send = recv, send
        every = self._ckpt_every()
        compute_s = data_s = step_s = 0.0
        t_start = time.perf_counter()
        times = []
        self._jsonl = open(osp.join(self.log_dir, f'stage{k}_replica{self.topo.replica}.jsonl'), 'a')
        mem = None
        for it in range(self.start_iter, self.total_iters):
            t_it = time.perf_counter()
            micro = None
            if self.topo.is_first and self._stop_now():
                self._stop_at(it, send)
                break
            if self.topo.is_first:
                t0 = time.perf_counter()
                batch = self._first_batch if self._first_batch is not None else self._next_batch()
                self._first_batch = None
                with ow.optim_context(model):
                    data = model.data_preprocessor(batch, True)
                micro = split_micro(data, M)
                data_s += time.perf_counter() - t0
            if it == self.profile_memory_iter:  # the live-tensor (CPU) or allocator (CUDA) peak
                mem = PeakMemory(self.device, (self.model, self.optim_wrapper.optimizer)).__enter__()
            stats: Dict[str, float] = defaultdict(float)
            for j in range(M):
                self.position = (it, j)
                if micro is not None:
                    ctx = model.make_context(micro[j]['inputs'], micro[j]['data_samples'])
                    h = ctx.inputs
                else:
                    control, msg = recv.get()
                    if control.get('stop') is not None and (control['stop'], j) == (it, 0):
                        self._stop_at(it, send)
                        break
                    if (control.get('iter'), control.get('micro')) != (it, j):
                        raise RuntimeError(f'pipeline out of step: expected iteration {it} micro-batch {j}, '
                                           f'received {control}')
                    ctx = self._context_from(msg)
                    h = msg['h']
                t0 = time.perf_counter()
                with ow.optim_context(model):
                    out, losses = model.forward_unit(k, h, ctx)
                loss, log_vars = model.parse_losses(losses)
                if send is not None:
                    send.send(dict(h=out.detach(), ctx={f: getattr(ctx, f) for f in self.send_fields},
                                   extras=sendable_extras(ctx.extras)), control=dict(iter=it, micro=j))
                ow.backward(ow.scale_loss(loss))
                del out, losses, ctx, h
                compute_s += time.perf_counter() - t0
                for name, v in log_vars.items():
                    stats[name] += float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                if ow.should_update():
                    t0 = time.perf_counter()
                    if self.grad_sync is not None:
                        self.grad_sync.launch(0)
                        self.grad_sync.wait()
                    ow.step()
                    ow.zero_grad()
                    step_s += time.perf_counter() - t0
                if (j + 1) % self.micros_per_iter == 0:
                    for s in self.schedulers:
                        if not s.by_epoch:
                            s.step()
            if mem is not None:
                mem.__exit__(None, None, None)
                self.summary['memory'] = dict(peak_bytes=mem.peak_bytes, device=str(self.device))
                mem = None
            if self.interrupted_at is not None:
                break
            done = it + 1
            if self.by_epoch and done % self.ipe == 0:
                for s in self.schedulers:
                    if s.by_epoch:
                        s.step()
            times.append(time.perf_counter())
            self._log(done, stats, M, time.perf_counter() - t_it)
            val_point = self._is_val_point(done)
            if done % every == 0 or done == self.total_iters or val_point:
                self.save_checkpoint(done)
            if val_point and self.validates:
                self.validate_now(done)
        self.position = ('end', None)
        if self.interrupted_at is not None and self.interrupted_at > self.start_iter \
                and self._saved_at != self.interrupted_at:
            self.save_checkpoint(self.interrupted_at)  # the same boundary on every stage
        if send is not None:
            send.close()
        if recv is not None:
            recv.close()
        self._jsonl.close()
        wall = time.perf_counter() - t_start
        self.summary.update(
            stage=k, replica=self.topo.replica, rank=self.rank, iters=self.total_iters - self.start_iter,
            micro_batches=M, wall_s=wall, compute_s=compute_s, data_s=data_s, step_s=step_s,
            iter_end_times=[t - t_start for t in times],
            recv_wait_s=recv.wait_s if recv else 0.0, credit_wait_s=send.credit_wait_s if send else 0.0,
            sent_log=send.log if send else [], taken_log=recv.log if recv else [],
            queue_size=pc.queue_size, freed_bytes=self.freed_bytes, interrupted_at=self.interrupted_at,
            owned_param_bytes=sum(p.numel() * p.element_size() for p in self.owned_params))
        with open(osp.join(self.log_dir, f'summary_rank{self.rank}.json'), 'w') as f:
            json.dump(self.summary, f)

    # -- entry ----------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        self.last_manifest = None
        with self.signals:
            return self._train()

    def _train(self) -> Dict[str, Any]:
        try:
            self.setup()
            self._loop()
        except PipelineAbort as e:
            print(f'[pipeline {self.where}] stopping: {e}', file=sys.stderr, flush=True)
            self._die()
        except InputError as e:
            if self.watchdog is None:  # the same on every rank (config, model, grid): one line from rank 0
                if self.rank == 0:
                    print(f'error: {e}', file=sys.stderr, flush=True)
                self._die()
            self._fail(e, primary_wait=0.0, prefix='error: ')
        except BaseException as e:  # noqa: BLE001
            self._fail(e, primary_wait=1.5 if isinstance(e, TransportError) else 0.0)
        self.watchdog.mark_done()
        dist.barrier()
        self.watchdog.stop()
        if self.interrupted_at is not None and self.rank == 0:
            where = (f'saved {ckpt_io.iter_dir(self.work_dir, self.interrupted_at)}'
                     if self.interrupted_at > self.start_iter else 'nothing new to save')
            why = self.signals.requested or self.watchdog.stop_requested
            print(f'pipeline: interrupted ({why}) at iteration {self.interrupted_at}/'
                  f'{self.total_iters}: {where}; continue with --resume', file=sys.stderr, flush=True)
        return self.summary

    def _fail(self, e: BaseException, primary_wait: float, prefix: str = '') -> None:
        if self.watchdog is not None and primary_wait:
            primary = self.watchdog.other_failure(wait_s=primary_wait)
            if primary is not None:
                print(f'[pipeline {self.where}] stopping: {primary}', file=sys.stderr, flush=True)
                self._die()
        it, j = self.position
        at = '' if it is None else (' at the end' if it == 'end' else f' at iteration {it + 1}, micro-batch {j}')
        msg = f'{prefix}{self.where} failed{at}: {type(e).__name__}: {e}'
        if isinstance(e, TransportError) and e.peer is not None:  # the neighbour vanished without a word
            msg = (f'{self._describe_rank(e.peer)} is gone (killed or crashed without a report): '
                   f'{self.where} lost its connection to it{at}: {e}')
            if self.watchdog is not None:
                self.watchdog.mark_dead(e.peer)
        if not isinstance(e, InputError):
            traceback.print_exc()
        print(msg, file=sys.stderr, flush=True)
        if self.watchdog is not None:
            self.watchdog.report_failure(msg)
        self._die()

    def _die(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self.watchdog is not None:
            self.watchdog.leave()
        os._exit(1)


def init_pipeline_dist(cfg) -> None:
    """Start the default process group from torchrun's environment (gloo on CPU, nccl on CUDA)."""
    from datetime import timedelta
    if dist.is_initialized():
        return
    backend = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('backend') or 'gloo'
    if backend == 'auto':
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    timeout = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('timeout', 1800)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))


def train_pipeline(cfg) -> Dict[str, Any]:
    """Module-parallel training of ``cfg`` on this process's rank (``tools/train.py`` calls this
    when the config has a ``pipeline`` section). Returns this rank's summary; global rank 0 also
    exports the final single-file checkpoint (``summary['exported']``) and evaluates it."""
    world = dist.get_world_size() if dist.is_initialized() else (
        int(os.environ['WORLD_SIZE']) if 'WORLD_SIZE' in os.environ else None)
    pc = check_pipeline_cfg(cfg, world)
    if not dist.is_initialized():
        if world is None or cfg.get('launcher', 'none') == 'none':
            from .config import requested_num_stages
            k = requested_num_stages(cfg.get('model')) or 'K'
            n = k * pc.replicas if isinstance(k, int) else 'K x R'
            raise InputError(f'pipeline training runs one process per module and replica: launch it with '
                             f'tools/dist_train.sh CONFIG {n} (torchrun), not as a single process')
        init_pipeline_dist(cfg)
    runner = PipelineRunner(cfg, pc)
    summary = runner.train()
    rank = dist.get_rank()
    if runner.interrupted_at is not None:
        dist.destroy_process_group()
        raise SystemExit(130)
    manifest = ckpt_io.resolve_manifest('auto', runner.work_dir) if rank == 0 else None
    dist.destroy_process_group()
    if rank == 0 and pc.export:
        name = (f'epoch_{runner.total_iters // runner.ipe}.pth' if runner.by_epoch
                else f'iter_{runner.total_iters}.pth')
        out = ckpt_io.export(manifest, osp.join(runner.work_dir, name))
        summary['exported'] = out
        print(f'pipeline: merged the stage checkpoints into {out} (tools/test.py CONFIG {out})', flush=True)
        if pc.val_at_end and cfg.get('val_dataloader') and cfg.get('val_evaluator'):
            summary['val'] = validate(cfg, out)
    return summary


def validate(cfg, checkpoint: str) -> Dict[str, float]:
    """Evaluate the exported checkpoint on ``val_dataloader`` in this process (no process group)."""
    from mmengine.runner import Runner
    c = copy.deepcopy(cfg)
    c.pop('pipeline', None)
    c.launcher = 'none'
    c.load_from = checkpoint
    c.resume = False
    c.train_dataloader = None
    c.train_cfg = None
    c.optim_wrapper = None
    c.param_scheduler = None
    runner = Runner.from_cfg(c)
    metrics = runner.val()
    print('pipeline: final validation metrics: ' + ', '.join(f'{k}: {float(v):.2f}' for k, v in metrics.items()),
          flush=True)
    return {k: float(v) for k, v in metrics.items()}
