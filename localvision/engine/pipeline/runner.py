"""One rank of a module-parallel run: set up its stage, run it, report failures.

:class:`PipelineRunner` builds the whole model from the config (as every rank does), traces which
context fields cross each cut, keeps its stage's parameters and frees the others, builds the
stage's optimizer and schedulers, restores a checkpoint to resume, and hands over to the stage
loop (:class:`~.loop.StageLoop`). The other jobs live next to it: the data position and RNG in
:mod:`.data`, the run's length and intervals in :mod:`.intervals`, checkpoints in
:mod:`.checkpoint`, validation during training in :mod:`.validation`, the entry points
(``train_pipeline``) in :mod:`.launch`.

A failure on any rank stops every rank (:mod:`.watchdog`): the failing rank prints and publishes
one line naming its stage, module, iteration and micro-batch, the others print ``stopping: ...``,
and all exit with status 1.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import os.path as osp
import sys
import traceback
from typing import Any, Dict, Iterable, Optional

import torch
import torch.distributed as dist

from localvision.engine.interrupt import StopOnSignal
from localvision.errors import InputError

from . import checkpoint as ckpt_io
from .best import BestCheckpoint, record_of
from .config import PipelineConfig
from .data import TrainBatches, saved_rng, set_rng_state, split_micro
from .follow import FollowReceiver, FollowSender, follow_cuts, followed_parameters
from .intervals import Intervals, build_param_schedulers, hook_cfg
from .loop import StageLoop
from .stage import fields_to_send, ownership, release_foreign, restrict_optimizer, trace_units
from .topology import Topology, build_topology
from .transport import TransportError
from .validation import StageValidator
from .watchdog import PipelineAbort, Watchdog


@contextlib.contextmanager
def _quiet():
    """Silence mmengine's logger below errors."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(cfg) -> torch.nn.Module:
    """The task model as ordinary training builds it (registry, then ``init_weights``)."""
    from mmengine.registry import MODELS
    from localvision.utils.config import model_config
    model = MODELS.build(model_config(cfg))
    if hasattr(model, 'init_weights'):
        with _quiet():  # mmengine's per-parameter initialisation report: thousands of lines
            model.init_weights()
    return model


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
        self.log_dir = osp.join(self.work_dir, 'pipeline_logs')
        os.makedirs(self.log_dir, exist_ok=True)
        if torch.cuda.is_available():
            self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        else:
            self.device = torch.device('cpu')
        self.comm_device = self.device if dist.get_backend() == 'nccl' else torch.device('cpu')
        self.watchdog: Optional[Watchdog] = None
        self.where = f'rank {self.rank}'
        self.summary: Dict[str, Any] = {}
        self.signals = StopOnSignal(announce=self.rank == 0)  # installed while train() runs
        self.loop: Optional[StageLoop] = None

    @property
    def interrupted_at(self) -> Optional[int]:
        """The iteration boundary where a stop ended the run (``None``: it ran to the end)."""
        return None if self.loop is None else self.loop.interrupted_at

    @property
    def total_iters(self) -> int:
        return self.intervals.total_iters

    @property
    def by_epoch(self) -> bool:
        return self.intervals.by_epoch

    @property
    def ipe(self) -> int:
        """Iterations (global batches) per epoch."""
        return self.intervals.iters_per_epoch

    # -- set-up ----------------------------------------------------------------------------
    def _describe_rank(self, rank: int) -> str:
        k = rank % self.K
        return f'stage {k} ({_module_label(self.model, k)}) on rank {rank}'

    def setup(self) -> None:
        """Everything before the first iteration (collective: every rank calls it)."""
        from mmengine.dist import sync_random_seed
        from mmengine.registry import init_default_scope
        from mmengine.runner import load_checkpoint, set_random_seed

        from localvision.utils.setup_env import register_all_modules
        cfg, pc = self.cfg, self.pc
        register_all_modules(init_default_scope=False)
        init_default_scope(cfg.get('default_scope', 'localvision'))
        randomness = dict(cfg.get('randomness') or {})
        self.seed = randomness.get('seed')
        if self.seed is None:
            self.seed = sync_random_seed()
        set_random_seed(self.seed, deterministic=randomness.get('deterministic', False))
        model = self.model = build_model(cfg)
        if cfg.get('load_from') and not cfg.get('resume'):
            load_checkpoint(model, cfg.load_from, map_location='cpu')
        self.K = model.num_units
        self.cuts = list(getattr(getattr(model, 'backbone', None), 'cuts', []) or []) or None
        self.topo: Topology = build_topology(self.K, pc.replicas, follow_cuts(model))
        self.stage = self.topo.stage
        self.where = self._describe_rank(self.rank)
        self.watchdog = Watchdog(self.rank, self.world, self._describe_rank, pc.heartbeat_timeout,
                                 stop_source=lambda: self.signals.requested).start()
        all_keys = list(model.state_dict().keys())

        self.start_iter, resume_state, self.resumed_from = 0, None, None
        if cfg.get('resume'):
            self.resumed_from = ckpt_io.resolve_manifest(cfg.get('load_from') or 'auto', self.work_dir)
            self.start_iter, resume_state = ckpt_io.load_for_resume(
                self.resumed_from, self.work_dir, self.stage, self.K, self.cuts)
        self._trace_and_share(resume_state)
        if self.start_iter > self.total_iters:
            raise InputError(f'the checkpoint is at iteration {self.start_iter}, beyond train_cfg '
                             f'({self.total_iters} iterations)')
        self._build_optimization()
        self.follow_in = self.follow_out = None
        if self.topo.in_follow is not None:  # this unit's objectives read the next module's weights (MAN)
            readers, params = followed_parameters(model, self.stage)
            self.follow_in = FollowReceiver(readers, params, self.topo.in_follow, self.topo.next_rank,
                                            self.comm_device, self.device, check_abort=self.watchdog.check_abort)
        self.freed_bytes = 0
        if pc.release_foreign:
            self.freed_bytes = release_foreign(model, self.param_owner, self.key_owner, self.stage,
                                               keep=self.unclaimed)
        model.to(self.device)
        model.train()
        self.schedulers = build_param_schedulers(cfg, self.optim_wrapper, self.intervals, pc.micro_batches,
                                                 pc.micros_per_step)
        with _quiet():  # mmengine warns that accumulation and BatchNorm mix (micro-batch statistics: intended)
            self.optim_wrapper.initialize_count_status(
                model, self.start_iter * pc.micro_batches, self.total_iters * pc.micro_batches)
        self.grad_sync = None
        if self.topo.replicas > 1:
            from localvision.engine.distributed import UnitGradSync
            self._broadcast_owned()
            self.grad_sync = UnitGradSync([self.owned_params], process_group=self.topo.dp_group)
        self.checkpointer = ckpt_io.StageCheckpointer(
            self.work_dir, self.topo, model, self.key_owner, self.optim_wrapper, self.schedulers,
            count=self.watchdog.count,
            run_info=dict(iters_per_epoch=self.ipe, num_stages=self.K, replicas=self.topo.replicas,
                          schedule=pc.schedule, micro_batches=pc.micro_batches, cuts=self.cuts),
            keys=all_keys, cfg_text=getattr(cfg, 'pretty_text', None),
            max_keep_ckpts=hook_cfg(cfg, 'checkpoint').get('max_keep_ckpts', -1))
        if resume_state is not None:
            self.checkpointer.restore(resume_state, osp.join(osp.dirname(self.resumed_from),
                                                             ckpt_io.stage_file(self.stage)))
            rng = saved_rng(resume_state, self.topo.replica)
            if not self.topo.is_first and rng is not None:  # stage 0's was restored with its data position
                set_rng_state(rng)
        if self.topo.out_follow is not None:  # the previous unit's objectives read this module's weights
            self.follow_out = FollowSender(followed_parameters(model, self.stage - 1)[1], self.topo.out_follow,
                                           self.topo.prev_rank, self.comm_device, first=self.start_iter,
                                           last=max(self.start_iter, self.total_iters - 1 - pc.follow_lag))
            self.follow_out.after(self.start_iter)
        self.validator = None
        if self.topo.is_last and self.topo.replica == 0:  # it reaches every boundary last
            best = BestCheckpoint.from_cfg(cfg, self.work_dir, self.intervals)
            if best is not None:  # the improvements up to where this run starts
                best.start(self.start_iter, source=self.resumed_from and record_of(self.resumed_from))
            self.validator = StageValidator(cfg, self.work_dir, self.log_dir, self.device, self.seed,
                                            self.total_iters, check_abort=self.watchdog.check_abort, best=best)

    def _trace_and_share(self, resume_state: Optional[Dict[str, Any]]) -> None:
        """Stage 0 opens the data at the resume position; global rank 0 traces the units on the
        first micro-batch and tells every rank the epoch length and the trace; each rank then knows
        what it sends and which parameters and state-dict keys are its own."""
        model, info = self.model, [None]
        self.batches = None
        if self.topo.is_first:
            self.batches = TrainBatches(self.cfg, self.topo.replica, self.pc.replicas, self.seed, self.start_iter,
                                        rng=saved_rng(resume_state, self.topo.replica),
                                        batch_source=self.batch_source, iters_per_epoch=self._ipe_given)
            first = self.batches.peek()
            if self.rank == 0:
                data = model.data_preprocessor(copy.deepcopy(first), True)
                micro = split_micro(data, self.pc.micro_batches)[0]
                info[0] = dict(ipe=self.batches.iters_per_epoch,
                               trace=trace_units(model, micro['inputs'], micro['data_samples']))
        dist.broadcast_object_list(info, src=0)
        self.intervals = Intervals.from_cfg(self.cfg, info[0]['ipe'])
        trace = info[0]['trace']
        self.send_fields = fields_to_send(trace['reads'], self.stage)
        self.param_owner, self.key_owner, self.unclaimed = ownership(model, trace['callers'])
        k_last = self.K - 1
        self.owned_params = [p for p in model.parameters() if self.param_owner.get(id(p), k_last) == self.stage]

    def _build_optimization(self) -> None:
        """The stage's ``OptimWrapper``: ``cfg.optim_wrapper`` restricted to its own parameters,
        accumulating over the micro-batches of one step."""
        from mmengine.optim import build_optim_wrapper
        ow_cfg = copy.deepcopy(self.cfg.optim_wrapper)
        ow_cfg['accumulative_counts'] = int(ow_cfg.get('accumulative_counts', 1)) * self.pc.micros_per_step
        self.optim_wrapper = build_optim_wrapper(self.model, ow_cfg)
        restrict_optimizer(self.optim_wrapper, {id(p) for p in self.owned_params})
        self._scale_lr()

    def _scale_lr(self) -> None:
        """``auto_scale_lr`` as mmengine's Runner applies it (before the schedulers are built): the
        learning rates times (replicas x train_dataloader.batch_size) / base_batch_size."""
        auto = self.cfg.get('auto_scale_lr') or {}
        if not auto.get('enable', False):
            return
        real_bs = self.pc.replicas * self.cfg.train_dataloader.batch_size
        ratio = float(real_bs) / float(auto['base_batch_size'])
        for group in self.optim_wrapper.optimizer.param_groups:
            group['lr'] = group['lr'] * ratio
        if self.rank == 0:
            print(f"pipeline: LR scaled by {ratio:g} (auto_scale_lr: base batch size {auto['base_batch_size']}, "
                  f'this run {real_bs} = {self.pc.replicas} replica(s) x {self.cfg.train_dataloader.batch_size})',
                  flush=True)

    def _broadcast_owned(self) -> None:
        """Replica 0's weights and buffers of this stage to the other replicas."""
        src = self.topo.rank_of(0, self.stage)
        with torch.no_grad():
            for p in self.owned_params:
                dist.broadcast(p.data, src=src, group=self.topo.dp_group)
            for key, t in self.model.state_dict(keep_vars=True).items():
                if self.key_owner.get(key) == self.stage and t.numel() and not isinstance(t, torch.nn.Parameter):
                    dist.broadcast(t.data, src=src, group=self.topo.dp_group)

    # -- entry ----------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        """Set up and train this rank's stage; returns its summary. Exits the process (status 1)
        on any failure, here or on another rank."""
        with self.signals:
            return self._train()

    def _train(self) -> Dict[str, Any]:
        try:
            self.setup()
            self.loop = StageLoop(self)
            self.summary = self.loop.run()
        except PipelineAbort as e:
            print(f'[pipeline {self.where}] stopping: {e}', file=sys.stderr, flush=True)
            self._die()
        except InputError as e:
            if self.watchdog is None:  # the same on every rank (config, model, grid): one line from rank 0
                if self.rank == 0:
                    print(f'error: {e}', file=sys.stderr, flush=True)
                self._die()
            # bad input often fails several stages at once (a checkpoint of another model): one line,
            # from the first rank to report it (lower ranks first when they fail together)
            self._fail(e, primary_wait=min(3.0, 0.1 + 0.5 * self.rank), prefix='error: ')
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
        it, j = (None, None) if self.loop is None else self.loop.position
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
