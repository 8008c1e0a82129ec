"""Entry points of module-parallel training: start the process group, train, export, validate.

``tools/train.py`` calls :func:`train_pipeline` when the config has a ``pipeline`` section; every
process of the K x R grid (started by torchrun, ``tools/dist_train.sh``) runs one
:class:`~.runner.PipelineRunner`. At the end, global rank 0 merges the last checkpoint into the
single file ordinary training writes and evaluates it with mmengine's own ``Runner.val``
(:func:`validate`).
"""
from __future__ import annotations

import copy
import os
import os.path as osp
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict

import torch
import torch.distributed as dist

from localvision.errors import InputError
from localvision.utils.device import check_dist_backend, default_dist_backend, share_gpus_in_mmengine_logger

from . import checkpoint as ckpt_io
from .best import RULE_KEYS, BestCheckpoint
from .config import check_pipeline_cfg, peak_memory_iter, requested_num_stages
from .runner import PipelineRunner


def init_pipeline_dist(cfg) -> None:
    """Start the default process group from torchrun's environment (``'auto'``: nccl with a GPU
    for each stage process of this machine, gloo on CPU or where stages share GPUs)."""
    if dist.is_initialized():
        return
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    backend = dist_cfg.get('backend') or 'gloo'
    if backend == 'auto':
        backend = default_dist_backend()
    check_dist_backend(backend, shares_gpus=True)
    if torch.cuda.is_available():  # ranks may share a GPU (more stages than GPUs)
        share_gpus_in_mmengine_logger()
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=dist_cfg.get('timeout', 1800)))


def train_pipeline(cfg) -> Dict[str, Any]:
    """Module-parallel training of ``cfg`` on this process's rank (``tools/train.py`` calls this
    when the config has a ``pipeline`` section). Returns this rank's summary; global rank 0 also
    exports the final single-file checkpoint (``summary['exported']``), evaluates it and, with
    ``default_hooks.checkpoint.save_best``, keeps it as the best checkpoint if it is."""
    world = dist.get_world_size() if dist.is_initialized() else (
        int(os.environ['WORLD_SIZE']) if 'WORLD_SIZE' in os.environ else None)
    pc = check_pipeline_cfg(cfg, world)
    if not dist.is_initialized():
        if world is None or cfg.get('launcher', 'none') == 'none':
            k = requested_num_stages(cfg.get('model')) or 'K'
            n = k * pc.replicas if isinstance(k, int) else 'K x R'
            raise InputError(f'pipeline training runs one process per module and replica: launch it with '
                             f'tools/dist_train.sh CONFIG {n} (torchrun), not as a single process')
        init_pipeline_dist(cfg)
    runner = PipelineRunner(cfg, pc, profile_memory_iter=peak_memory_iter(cfg))
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
            best = BestCheckpoint.from_cfg(cfg, runner.work_dir, runner.intervals)
            if best is not None:  # the record the last stage kept during training, and the final validation
                best.update(runner.total_iters, summary['val'],
                            lambda path: ckpt_io.put_bytes(Path(out).read_bytes(), path))
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
    ckpt_hook = (c.get('default_hooks') or {}).get('checkpoint')
    for key in RULE_KEYS if ckpt_hook else ():  # the best checkpoint is kept by train_pipeline
        ckpt_hook.pop(key, None)
    runner = Runner.from_cfg(c)
    metrics = runner.val()
    print('pipeline: final validation metrics: ' + ', '.join(f'{k}: {float(v):.2f}' for k, v in metrics.items()),
          flush=True)
    return {k: float(v) for k, v in metrics.items()}
