"""Module-parallel (pipelined) training of gradient-isolated modules: one process / device per
module, detached activations forwarded with point-to-point ops, no gradient sent backwards (only
the weights an objective such as MAN reads from the next module).

One file per job: :mod:`.launch` (entry points: ``train_pipeline``, ``validate``), :mod:`.runner`
(one rank: set-up and failure reports), :mod:`.loop` (the stage loop and the schedules),
:mod:`.intervals` (length, intervals, parameter schedulers), :mod:`.data` (data position and RNG),
:mod:`.checkpoint` (per-stage checkpoints and their export), :mod:`.validation` (validation during
training), :mod:`.transport` (the bounded queue), :mod:`.follow` (weights read from the next module),
:mod:`.stage` (what crosses a cut, who owns what), :mod:`.topology` (the rank grid), :mod:`.watchdog`
(failure propagation), :mod:`.config` (the ``pipeline`` section).
"""
from .config import PipelineConfig, check_pipeline_cfg, parse_pipeline_cfg
from .data import ReplicaSampler, build_train_loader, split_micro
from .launch import init_pipeline_dist, train_pipeline, validate
from .runner import PipelineRunner, build_model

__all__ = ['PipelineConfig', 'check_pipeline_cfg', 'parse_pipeline_cfg', 'PipelineRunner', 'ReplicaSampler',
           'build_model', 'build_train_loader', 'split_micro', 'train_pipeline', 'init_pipeline_dist', 'validate']
