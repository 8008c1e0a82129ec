"""``default_hooks.checkpoint.save_best`` under module-parallel training.

As with mmengine's ``CheckpointHook`` (whose reading of ``save_best``, ``rule``, ``greater_keys``
and ``less_keys`` is used as is): after every validation, each metric of ``save_best`` that beats
its best so far gets the merged checkpoint of that iteration saved as
``WORK_DIR/best_{metric}_{epoch|iter}_{n}.pth`` (``/`` in the metric's name becomes ``_``; ``epoch``
when the hook counts epochs and training is epoch-based), and the metric's previous best file is
removed. Validations during training (the last stage, :class:`~.validation.StageValidator`) and
the final validation of the export (global rank 0, :func:`~.launch.train_pipeline`) both count.

The record (``WORK_DIR/pipeline_ckpt/best.json``) lists every improvement per metric, with its
iteration, score and file. A run resumed at iteration n keeps the improvements up to n (from the
work dir of the checkpoint it resumes), so it continues from the best as of n, as mmengine's
resume restores ``best_score`` from the checkpoint.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional

from localvision.errors import InputError

from . import checkpoint as ckpt_io
from .intervals import hook_cfg

RECORD = 'best.json'
# the keys of default_hooks.checkpoint this module reads (the hook's rule options)
RULE_KEYS = ('save_best', 'rule', 'greater_keys', 'less_keys')


def rule_hook(cfg):
    """mmengine's ``CheckpointHook`` built from the rule options of ``default_hooks.checkpoint``
    (``None``: no ``save_best``); a setting it rejects becomes an :class:`InputError`."""
    ckpt = hook_cfg(cfg, 'checkpoint')
    if not ckpt.get('save_best'):
        return None
    from mmengine.hooks import CheckpointHook
    try:
        return CheckpointHook(**{k: ckpt[k] for k in RULE_KEYS if k in ckpt})
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if e.args else type(e).__name__
        raise InputError(f'default_hooks.checkpoint: {msg} (save_best={ckpt["save_best"]!r}, '
                         f'rule={ckpt.get("rule")!r})') from None


def record_path(work_dir: str) -> str:
    return osp.join(ckpt_io.ckpt_root(work_dir), RECORD)


def record_of(manifest: str) -> str:
    """The record of the work dir a checkpoint manifest (``.../pipeline_ckpt/iter_n/manifest.json``) is in."""
    return osp.join(osp.dirname(osp.dirname(osp.abspath(manifest))), RECORD)


def read_record(path: str) -> Dict[str, List[Dict[str, Any]]]:
    """``{metric: [{'iter', 'score', 'path'}, ...]}`` (empty when the file does not exist)."""
    if not osp.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)['improvements']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f'the save_best record {path} is unreadable ({e}); delete it to start the best '
                         'checkpoint over') from None


class BestCheckpoint:
    """The best checkpoint per metric of ``save_best`` (see the module doc).

    Args:
        hook: mmengine's ``CheckpointHook`` holding the rules (:func:`rule_hook`).
        work_dir: the run's work dir (best files and the record).
        by_epoch: name the files by epoch (epoch-based training and an epoch-counting hook).
        iters_per_epoch: global batches per epoch (epoch numbers).
    """

    def __init__(self, hook, work_dir: str, by_epoch: bool, iters_per_epoch: int) -> None:
        self.hook = hook
        self.work_dir, self.by_epoch, self.ipe = osp.abspath(work_dir), by_epoch, iters_per_epoch
        self.path = record_path(self.work_dir)
        self.improvements: Dict[str, List[Dict[str, Any]]] = read_record(self.path)

    @classmethod
    def from_cfg(cls, cfg, work_dir: str, intervals) -> Optional['BestCheckpoint']:
        """``None`` when the config has no ``save_best``."""
        hook = rule_hook(cfg)
        if hook is None:
            return None
        by_epoch = intervals.by_epoch and hook_cfg(cfg, 'checkpoint').get('by_epoch', True)
        return cls(hook, work_dir, by_epoch, intervals.iters_per_epoch)

    def start(self, iteration: int, source: Optional[str] = None) -> None:
        """Begin a run at ``iteration`` (0, or the resumed checkpoint's): keep the improvements up to
        it, from the record ``source`` (that of the resumed checkpoint's work dir; default: this
        run's), and write the record here."""
        found = read_record(source or self.path)
        self.improvements = {k: [e for e in v if e['iter'] <= iteration] for k, v in found.items()}
        self._write()

    def best(self, metric: str) -> Optional[Dict[str, Any]]:
        """The latest improvement of ``metric`` (``None``: none yet)."""
        entries = self.improvements.get(metric) or []
        return entries[-1] if entries else None

    def update(self, iteration: int, metrics: Dict[str, float], save: Callable[[str], None]) -> List[str]:
        """The validation of ``iteration`` gave ``metrics``: for each metric that improved, ``save``
        (writes the checkpoint of that iteration to the path it gets) and drop the previous file.
        Returns the files written."""
        hook = self.hook
        if 'auto' in hook.key_indicators:  # the first metric of the first validation, as mmengine
            hook._init_rule(hook.rules, [next(iter(metrics))])
        written = []
        for key in hook.key_indicators:
            if key not in metrics:
                raise InputError(f'default_hooks.checkpoint.save_best={key!r} is not among the validation metrics '
                                 f'{sorted(metrics)}; the stage checkpoints are saved: fix save_best and continue '
                                 'with --resume')
            score = float(metrics[key])
            last = self.best(key)
            if last is not None and not hook.is_better_than[key](score, last['score']):
                continue
            step = (f'epoch_{iteration // self.ipe}' if self.by_epoch else f'iter_{iteration}')
            path = osp.join(self.work_dir, f'best_{key}_{step}.pth'.replace('/', '_'))
            save(path)
            if last is not None and last['path'] != path and osp.dirname(last['path']) == self.work_dir \
                    and osp.isfile(last['path']):  # (a resume from another work dir leaves that one alone)
                os.remove(last['path'])
            self.improvements.setdefault(key, []).append(dict(iter=iteration, score=score, path=path))
            self._write()
            print(f'pipeline: the best checkpoint with {score:.4f} {key} at iteration {iteration} is saved to '
                  f'{path}', flush=True)
            written.append(path)
        return written

    def _write(self) -> None:
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        ckpt_io.put_bytes(json.dumps(dict(improvements=self.improvements), indent=1).encode(), self.path)
