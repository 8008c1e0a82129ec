"""The ``pipeline`` section of a config: checked before any process group or model exists.

.. code-block:: python

    pipeline = dict(schedule='sync',      # or 'async'
                    micro_batches=4,      # M: each global batch (train_dataloader.batch_size) in M parts
                    queue_size=2,         # Q: stage k may be at most Q micro-batches ahead of stage k+1
                    replicas=1,           # R: data-parallel copies of the whole pipeline (K x R processes)
                    step_every=1,         # async only: optimizer step every n micro-batches (n divides M)
                    follow_lag=0)         # objectives reading the next module (MAN): how many iterations
                                          # old its weights may be (0: as in one process)

Everything that cannot work is rejected here with one :class:`~localvision.errors.InputError` line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from localvision.errors import InputError

from .intervals import hook_cfg

SCHEDULES = ('sync', 'async')
# training samplers whose order the pipeline's own (sharded, resumable) sampler reproduces
SAMPLERS = ('DefaultSampler', 'InfiniteSampler')
# default_hooks.checkpoint keys pipeline training honours (the stage files always hold the optimizer
# and the schedulers: a resume needs them; the last iteration is always saved: the export needs it)
CHECKPOINT_KEYS = ('type', '_scope_', 'interval', 'by_epoch', 'max_keep_ckpts', 'save_last', 'save_optimizer',
                   'save_param_scheduler', 'save_best', 'rule', 'greater_keys', 'less_keys')
# train_cfg keys module-parallel training honours, and the loops it reproduces (mmengine's two, and
# localvision's epoch loop that load_config puts in place of mmengine's: the same iterations)
TRAIN_CFG_KEYS = ('type', '_scope_', 'by_epoch', 'max_epochs', 'max_iters', 'val_begin', 'val_interval',
                  'dynamic_intervals')
TRAIN_LOOPS = ('EpochBasedTrainLoop', 'IterBasedTrainLoop', 'LocalEpochBasedTrainLoop')
KEYS = ('schedule', 'micro_batches', 'queue_size', 'replicas', 'step_every', 'heartbeat_timeout',
        'release_foreign', 'val_at_end', 'export', 'follow_lag')


def _int(cfg: dict, key: str, default: int, minimum: int = 1) -> int:
    v = cfg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise InputError(f'pipeline.{key}={v!r} is invalid: an integer >= {minimum} is required')
    return v


@dataclass(frozen=True)
class PipelineConfig:
    schedule: str = 'sync'
    micro_batches: int = 1
    queue_size: int = 2
    replicas: int = 1
    step_every: int = 1
    heartbeat_timeout: float = 15.0
    release_foreign: bool = True
    val_at_end: bool = True
    export: bool = True
    follow_lag: int = 0

    @property
    def micros_per_step(self) -> int:
        """Micro-batches per optimizer step (before the config's own ``accumulative_counts``)."""
        return self.micro_batches if self.schedule == 'sync' else self.step_every


def parse_pipeline_cfg(raw) -> PipelineConfig:
    """The validated ``pipeline`` dict (see the module doc)."""
    if not isinstance(raw, dict):
        raise InputError(f'pipeline={raw!r} must be a dict, e.g. dict(schedule="sync", micro_batches=4)')
    raw = dict(raw)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise InputError(f'pipeline has unknown keys {unknown}; allowed: {list(KEYS)}')
    schedule = raw.get('schedule', 'sync')
    if schedule not in SCHEDULES:
        raise InputError(f'pipeline.schedule={schedule!r} is unknown; allowed: {list(SCHEDULES)}')
    m = _int(raw, 'micro_batches', 1)
    q = _int(raw, 'queue_size', 2)
    r = _int(raw, 'replicas', 1)
    n = _int(raw, 'step_every', 1)
    lag = _int(raw, 'follow_lag', 0, minimum=0)
    if schedule == 'sync' and 'step_every' in raw and n != 1:
        raise InputError(f'pipeline.step_every={n} only applies to the async schedule (sync steps once per '
                         'global batch); remove it or set schedule="async"')
    if schedule == 'async' and m % n:
        raise InputError(f'pipeline.step_every={n} must divide pipeline.micro_batches={m} (every global batch '
                         'ends on an optimizer step, where checkpoints are taken)')
    hb = raw.get('heartbeat_timeout', 15.0)
    if not isinstance(hb, (int, float)) or isinstance(hb, bool) or hb <= 0:
        raise InputError(f'pipeline.heartbeat_timeout={hb!r} must be a number of seconds > 0')
    flags = {}
    for key in ('release_foreign', 'val_at_end', 'export'):
        v = raw.get(key, True)
        if not isinstance(v, bool):
            raise InputError(f'pipeline.{key}={v!r} must be True or False')
        flags[key] = v
    return PipelineConfig(schedule=schedule, micro_batches=m, queue_size=q, replicas=r, step_every=n,
                          follow_lag=lag, heartbeat_timeout=float(hb), **flags)


def requested_num_stages(model_cfg: dict) -> Optional[int]:
    """K as the config states it (``split.cuts`` or ``split.num_modules``), without building the
    model; ``None`` when the config does not say (a wrapper model, for instance)."""
    split = (model_cfg or {}).get('split') or {}
    if split.get('cuts') is not None:
        return len(split['cuts']) + 1
    k = split.get('num_modules', 1)
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def objectives_training_next_module(local_objective) -> List[str]:
    """Types among ``model.local_objective`` (a dict or a list) whose loss reaches the next
    module's weights (``LocalObjective.trains_next_module``, e.g. HPFF), as registered (the
    config's custom_imports register the objectives)."""
    from localvision.registry import OBJECTIVES
    cfgs = local_objective if isinstance(local_objective, (list, tuple)) else [local_objective]
    names = []
    for c in cfgs:
        t = (c or {}).get('type') if isinstance(c, dict) else None
        cls = OBJECTIVES.get(t) if isinstance(t, str) else None
        if getattr(cls, 'trains_next_module', False) and t not in names:
            names.append(t)
    return names


def _type_name(t) -> str:
    """A registry ``type`` (a name, possibly scoped, or a class) as its bare class name."""
    name = t if isinstance(t, str) else getattr(t, '__name__', repr(t))
    return name.split('.')[-1]


def peak_memory_iter(cfg) -> Optional[int]:
    """The iteration whose peak memory every stage measures: ``at_iter`` of a ``PeakMemoryHook`` in
    ``custom_hooks`` (``None``: there is none). Any other custom hook is refused: hooks act through
    one Runner that holds the whole model, and a pipeline stage holds one module."""
    from localvision.engine.hooks import PeakMemoryHook
    at, others = None, []
    for h in cfg.get('custom_hooks') or []:
        name = _type_name(h.get('type') if isinstance(h, dict) else h)
        if name != 'PeakMemoryHook':
            others.append(name)
            continue
        kwargs = {k: v for k, v in h.items() if k not in ('type', 'priority')}
        try:
            at = PeakMemoryHook(**kwargs).at_iter
        except (TypeError, ValueError) as e:
            raise InputError(f'custom_hooks: {name}: {e}') from None
    if others:
        raise InputError(f'custom_hooks {others} do not run under pipeline training (hooks act on one Runner '
                         'holding the whole model; each pipeline process holds one module); remove them '
                         '(--cfg-options custom_hooks=[]) or train without `pipeline`. Only PeakMemoryHook is '
                         'honoured: every stage measures its own peak')
    return at


def check_checkpoint_hook(cfg) -> None:
    """``default_hooks.checkpoint`` holds only keys pipeline training honours (see ``CHECKPOINT_KEYS``),
    and a ``save_best`` / ``rule`` that mmengine's ``CheckpointHook`` accepts."""
    from .best import rule_hook
    unknown = sorted(set(hook_cfg(cfg, 'checkpoint')) - set(CHECKPOINT_KEYS))
    if unknown:
        raise InputError(f'default_hooks.checkpoint keys {unknown} are not supported with pipeline training (each '
                         'stage writes its own files under WORK_DIR/pipeline_ckpt, with optimizer and schedulers, '
                         f'and the export is WORK_DIR/epoch_N.pth or iter_N.pth); remove them. Honoured: '
                         f'{list(CHECKPOINT_KEYS)}')
    rule_hook(cfg)


def check_train_cfg(cfg) -> None:
    """``train_cfg`` is one of the loops in ``TRAIN_LOOPS``, with keys pipeline training reads
    (:class:`~.intervals.Intervals`)."""
    train_cfg = dict(cfg.get('train_cfg') or {})
    loop = train_cfg.get('type')
    name = None if loop is None else _type_name(loop)
    if name is not None and name not in TRAIN_LOOPS:
        raise InputError(f'train_cfg.type={name!r} is not supported with pipeline training: its stages run the '
                         f'iterations of {", ".join(TRAIN_LOOPS)}; use one of them, or train without `pipeline`')
    unknown = sorted(set(train_cfg) - set(TRAIN_CFG_KEYS))
    if unknown:
        raise InputError(f'train_cfg keys {unknown} are not supported with pipeline training; remove them. '
                         f'Honoured: {list(TRAIN_CFG_KEYS)}')


def check_pipeline_cfg(cfg, world_size: Optional[int] = None) -> PipelineConfig:
    """Validate ``cfg.pipeline`` against the data loader and the number of processes.

    Raises :class:`InputError` for schedules, queue sizes, micro-batch counts, process counts,
    objectives, samplers, hooks, checkpoint options, training loops or ``auto_scale_lr`` settings
    that cannot work, before anything starts.
    """
    pc = parse_pipeline_cfg(cfg.get('pipeline'))
    loader = cfg.get('train_dataloader') or {}
    bs = loader.get('batch_size')
    if not isinstance(bs, int) or bs < 1:
        raise InputError(f'pipeline training needs train_dataloader.batch_size (an integer >= 1), got {bs!r}')
    if bs % pc.micro_batches:
        raise InputError(f'pipeline.micro_batches={pc.micro_batches} does not divide train_dataloader.batch_size='
                         f'{bs} (each global batch is cut into M equal micro-batches); allowed: a divisor of {bs}')
    crossing = objectives_training_next_module((cfg.get('model') or {}).get('local_objective'))
    if crossing:
        raise InputError(f'model.local_objective {crossing} trains the next module too (its gradients would have to '
                         'cross back to the process of that module); train it without `pipeline` '
                         '(one process, or data parallel with tools/dist_train.sh), or pick another objective')
    peak_memory_iter(cfg)
    name = _type_name((loader.get('sampler') or {}).get('type', 'DefaultSampler'))
    if name not in SAMPLERS:
        raise InputError(f'train_dataloader.sampler.type={name!r} is not supported with pipeline training: each '
                         f'replica\'s stage 0 reads its shard in order, as {" or ".join(SAMPLERS)} (shuffle '
                         'or not) would; use one of them, or train without `pipeline`')
    check_checkpoint_hook(cfg)
    check_train_cfg(cfg)
    auto = cfg.get('auto_scale_lr') or {}
    if auto.get('enable', False) and not isinstance(auto.get('base_batch_size'), (int, float)):
        raise InputError(f"auto_scale_lr.enable=True needs auto_scale_lr.base_batch_size (a number), got "
                         f"{auto.get('base_batch_size')!r}")
    k = requested_num_stages(cfg.get('model'))
    if world_size is not None and k is not None and world_size != k * pc.replicas:
        raise InputError(f'pipeline training of K={k} modules x pipeline.replicas={pc.replicas} needs '
                         f'{k * pc.replicas} processes, got {world_size} '
                         f'(launch: tools/dist_train.sh CONFIG {k * pc.replicas})')
    return pc
