"""Validation during module-parallel training.

At a validation point (``train_cfg.val_interval`` / ``val_begin``, see
:meth:`~.intervals.Intervals.val_due`) every stage saves its checkpoint; the last stage of replica 0
(it reaches the boundary last) waits for the set to be complete, merges the stage files into the
full model and evaluates it with ``val_dataloader`` / ``val_evaluator``, while the other stages
run ahead as far as the queues allow; with ``default_hooks.checkpoint.save_best`` an improvement
exports that checkpoint as the best one (:mod:`.best`). The RNG is left untouched (a resumed run still ends
bit-identical) and the full model is freed afterwards. The final validation is that of the
exported checkpoint (:func:`~.launch.validate`).
"""
from __future__ import annotations

import copy
import json
import os.path as osp
import time
from typing import Callable, Dict, List, Optional

import torch

from . import checkpoint as ckpt_io
from .best import BestCheckpoint
from .data import ReplicaSampler, rng_state, set_rng_state


class StageValidator:
    """Evaluates the merged checkpoints of a run on the whole validation set, in this process.

    Args:
        cfg: the full config (``model``, ``val_dataloader``, ``val_evaluator``).
        work_dir: the run's work dir (where the checkpoints are).
        log_dir: where ``val.jsonl`` is appended.
        device: where the merged model runs.
        seed: the run's seed (the validation loader's).
        total_iters: the run's length (for the printed ``[iteration/total]``).
        check_abort: raises if another rank failed while waiting for the checkpoint.
        timeout_s: how long to wait for the other stages' files of a checkpoint.
        best: keeps the best checkpoint (``default_hooks.checkpoint.save_best``).
    """

    def __init__(self, cfg, work_dir: str, log_dir: str, device: torch.device, seed: int, total_iters: int,
                 check_abort: Callable[[], None], timeout_s: float = 600.0,
                 best: Optional[BestCheckpoint] = None) -> None:
        self.cfg, self.work_dir, self.log_dir, self.device = cfg, work_dir, log_dir, device
        self.seed, self.total_iters, self.check_abort, self.timeout_s = seed, total_iters, check_abort, timeout_s
        self.best = best
        self.history: List[Dict[str, float]] = []  # every validation of the run
        self._loader = self._evaluator = None  # built at the first validation

    def _build(self) -> None:
        from mmengine.evaluator import Evaluator
        from mmengine.runner import Runner
        loader_cfg = copy.deepcopy(self.cfg.val_dataloader)
        shuffle = dict(loader_cfg.get('sampler') or {}).get('shuffle', False)
        # the whole set on this one rank (DefaultSampler would take this rank's shard of K x R)
        loader_cfg['sampler'] = dict(type=ReplicaSampler, shuffle=shuffle, seed=self.seed, rank=0, world_size=1)
        self._loader = Runner.build_dataloader(loader_cfg, seed=self.seed)
        self._evaluator = Evaluator(copy.deepcopy(self.cfg.val_evaluator))
        self._evaluator.dataset_meta = getattr(self._loader.dataset, 'metainfo', None)

    def _wait_for(self, iteration: int) -> str:
        manifest = osp.join(ckpt_io.iter_dir(self.work_dir, iteration), ckpt_io.MANIFEST)
        deadline = time.time() + self.timeout_s
        while not osp.isfile(manifest):  # the other stages' files of this iteration
            self.check_abort()
            if time.time() > deadline:
                raise RuntimeError(f'the checkpoint of iteration {iteration} was not completed within '
                                   f'{self.timeout_s / 60:g} minutes')
            time.sleep(0.05)
        return manifest

    def build_model(self, manifest: str) -> torch.nn.Module:
        """The model as training builds it (the top-level ``data_preprocessor`` merged in, as
        mmengine's Runner does) with the merged weights of ``manifest``, on the device, in eval mode."""
        from mmengine.registry import MODELS

        from localvision.utils.config import model_config
        model = MODELS.build(model_config(self.cfg))
        model.load_state_dict(ckpt_io.merged_state_dict(manifest))
        return model.to(self.device).eval()

    def _evaluate(self, manifest: str) -> Dict[str, float]:
        if self._loader is None:
            self._build()
        model = self.build_model(manifest)
        with torch.no_grad():
            for batch in self._loader:
                self._evaluator.process(data_samples=model.val_step(batch), data_batch=batch)
        metrics: Dict[str, float] = {}
        for metric in self._evaluator.metrics:  # BaseMetric.evaluate without collect_results: one rank evaluates
            res = metric.compute_metrics(metric.results)
            metric.results.clear()
            metrics.update({(f'{metric.prefix}/{k}' if metric.prefix else k): float(v) for k, v in res.items()})
        return metrics

    def __call__(self, iteration: int) -> Dict[str, float]:
        """Evaluate the checkpoint of ``iteration`` once every stage has saved it; print and log."""
        manifest = self._wait_for(iteration)
        rng = rng_state()
        t0 = time.perf_counter()
        try:
            metrics = self._evaluate(manifest)
        finally:
            set_rng_state(rng)
        body = '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items())
        print(f'Pipeline(val) [{iteration}/{self.total_iters}] {body}  time: {time.perf_counter() - t0:.1f} s',
              flush=True)
        with open(osp.join(self.log_dir, 'val.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=iteration, **metrics)) + '\n')
        self.history.append(dict(iter=iteration, **metrics))
        if self.best is not None:
            self.best.update(iteration, metrics, lambda path: ckpt_io.export(manifest, path))
        return metrics
