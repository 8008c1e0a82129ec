"""How long a module-parallel run is and when things happen in it, read from the config as
ordinary training reads it: the length (``train_cfg.max_epochs`` / ``max_iters``), checkpoints
(``default_hooks.checkpoint``), validation (``train_cfg.val_interval`` / ``val_begin`` /
``dynamic_intervals``, with the defaults of mmengine's loops), log lines
(``default_hooks.logger.interval``), and the parameter schedulers (``param_scheduler``, built
through mmengine's ``PARAM_SCHEDULERS``). Iterations count global batches; a stage's schedulers
count its optimizer steps.
"""
from __future__ import annotations

import bisect
import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from localvision.errors import InputError


def hook_cfg(cfg, name: str) -> Dict[str, Any]:
    """``cfg.default_hooks[name]`` as a dict (empty when absent)."""
    return dict((cfg.get('default_hooks') or {}).get(name) or {})


@dataclass(frozen=True)
class Intervals:
    """The run's length and when a stage checkpoints, validates and logs (see the module doc).

    Build it with :meth:`from_cfg`; the ``*_due(done)`` methods answer for the iteration ``done``
    that just finished (1-based).
    """

    total_iters: int
    iters_per_epoch: int
    by_epoch: bool
    checkpoint_every: int
    log_every: int
    val_interval: int
    val_begin: int
    has_val: bool
    val_milestones: Tuple[int, ...] = ()  # train_cfg.dynamic_intervals, as mmengine's loops read them
    val_intervals: Tuple[int, ...] = ()

    @classmethod
    def from_cfg(cls, cfg, iters_per_epoch: int) -> 'Intervals':
        """Read ``train_cfg`` and ``default_hooks`` (``iters_per_epoch``: global batches per epoch)."""
        train_cfg = dict(cfg.get('train_cfg') or {})
        if train_cfg.get('max_iters') is not None:
            total, by_epoch = int(train_cfg['max_iters']), False
        elif train_cfg.get('max_epochs') is not None:
            total, by_epoch = int(train_cfg['max_epochs']) * iters_per_epoch, True
        else:
            raise InputError('pipeline training needs train_cfg.max_epochs or train_cfg.max_iters')
        ckpt = hook_cfg(cfg, 'checkpoint')
        every = int(ckpt.get('interval', 1))
        if ckpt.get('by_epoch', True) and by_epoch:
            every *= iters_per_epoch
        from mmengine.runner.utils import calc_dynamic_intervals
        # mmengine's defaults: EpochBasedTrainLoop validates every epoch, IterBasedTrainLoop every 1000 iterations
        val_interval = int(train_cfg.get('val_interval', 1 if by_epoch else 1000))
        milestones, intervals = calc_dynamic_intervals(val_interval, train_cfg.get('dynamic_intervals'))
        return cls(total_iters=total, iters_per_epoch=iters_per_epoch, by_epoch=by_epoch,
                   checkpoint_every=max(every, 1), log_every=int(hook_cfg(cfg, 'logger').get('interval', 10)),
                   val_interval=val_interval, val_begin=int(train_cfg.get('val_begin', 1)),
                   has_val=bool(cfg.get('val_dataloader') and cfg.get('val_evaluator')),
                   val_milestones=tuple(milestones), val_intervals=tuple(intervals))

    def epoch_ends(self, done: int) -> bool:
        """Iteration ``done`` ends an epoch of epoch-based training."""
        return self.by_epoch and done % self.iters_per_epoch == 0

    def checkpoint_due(self, done: int) -> bool:
        """Every ``default_hooks.checkpoint.interval`` epochs (or iterations), and at the end."""
        return done % self.checkpoint_every == 0 or done == self.total_iters

    def val_due(self, done: int) -> bool:
        """Validate after iteration ``done`` (the end of training is validated on the exported
        checkpoint instead)."""
        if done >= self.total_iters or not self.has_val:
            return False
        if self.by_epoch:
            epoch, within = divmod(done, self.iters_per_epoch)
            return within == 0 and epoch >= self.val_begin and epoch % self.val_interval_at(epoch) == 0
        return done >= self.val_begin and done % self.val_interval_at(done) == 0

    def val_interval_at(self, count: int) -> int:
        """The validation interval after ``count`` epochs (or iterations) as mmengine's loops decide
        it (``_decide_current_val_interval``: ``train_cfg.dynamic_intervals``)."""
        if not self.val_milestones:
            return self.val_interval
        return self.val_intervals[bisect.bisect(self.val_milestones, count + 1) - 1]

    def log_due(self, done: int) -> bool:
        """Every ``default_hooks.logger.interval`` iterations, and at the end."""
        return done % self.log_every == 0 or done == self.total_iters


def build_param_schedulers(cfg, optim_wrapper, intervals: Intervals, micro_batches: int,
                           micros_per_step: int) -> list:
    """``cfg.param_scheduler`` built through mmengine's ``PARAM_SCHEDULERS`` for one stage, whose
    iterations are its optimizer steps (``micro_batches / micros_per_step`` per global batch)."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfgs = cfg.get('param_scheduler') or []
    cfgs = [cfgs] if isinstance(cfgs, dict) else list(cfgs)
    steps_per_iter = micro_batches // micros_per_step
    max_epochs = math.ceil(intervals.total_iters / intervals.iters_per_epoch)
    max_steps = intervals.total_iters * steps_per_iter
    out = []
    for c in cfgs:
        c = copy.deepcopy(dict(c))
        c.setdefault('end', max_epochs if c.get('by_epoch', True) else max_steps)
        out.append(PARAM_SCHEDULERS.build(c, default_args=dict(
            optimizer=optim_wrapper, epoch_length=intervals.iters_per_epoch * steps_per_iter)))
    return out


def step_schedulers(schedulers: list, by_epoch: bool) -> None:
    """Step the schedulers counting epochs (``by_epoch``) or those counting optimizer steps."""
    for s in schedulers:
        if s.by_epoch == by_epoch:
            s.step()
