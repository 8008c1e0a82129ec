"""The 2-D grid: R=2 replicas x K=2 stages on 4 gloo processes (tiny model, 2 cores are enough).

Each stage all-reduces its gradients over its replicas before the step, so the parameters equal
the single-process run accumulating over the micro-batches of both replicas' data shards
(BatchNorm running statistics are per replica, as in data-parallel training, and not compared;
no random augmentation: each replica draws its own augmentation RNG stream).
"""
import os.path as osp

import pytest
import torch

from pipeline_helpers import load_state, reference_run, spawn, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`


def test_two_replicas_of_a_two_stage_pipeline_equal_one_process(tiny_cls_root, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,), batch_size=8, augment=False,
                       pipeline="dict(schedule='sync', micro_batches=2, queue_size=2, replicas=2)")
    work = str(tmp_path / 'work')
    # one iteration: BatchNorm on micro-batches of 4 images amplifies float-order differences
    # (the all-reduce sums in another order) about 500x per step, in the single-process run as well
    spawn(cfg, work, 4, options={'train_cfg.max_iters': 1})
    state = load_state(osp.join(work, 'iter_1.pth'))
    ref = reference_run(cfg, micro_batches=2, iters=1, replicas=2)
    changed = 0
    for name, p in ref.named_parameters():
        torch.testing.assert_close(state[name], p.detach(), rtol=1e-4, atol=1e-5, msg=lambda m: f'{name}: {m}')
        changed += 1
    assert changed > 10
