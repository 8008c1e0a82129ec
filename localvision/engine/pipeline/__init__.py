"""Module-parallel (pipelined) training of gradient-isolated modules: one process / device per
module, detached activations forwarded with point-to-point ops, no backward communication.

See :mod:`.runner` for the schedules, :mod:`.transport` for the bounded queue,
:mod:`.checkpoint` for the per-stage checkpoints and their export, and ``docs/module_parallel.md``.
"""
from .config import PipelineConfig, check_pipeline_cfg, parse_pipeline_cfg
from .runner import PipelineRunner, ReplicaSampler, build_model, build_train_loader, split_micro, train_pipeline

__all__ = ['PipelineConfig', 'check_pipeline_cfg', 'parse_pipeline_cfg', 'PipelineRunner', 'ReplicaSampler',
           'build_model', 'build_train_loader', 'split_micro', 'train_pipeline']
