"""The asynchronous schedule: no global barrier, a step per micro-batch, a bounded queue.

Stage 1 of 3 is made slow on purpose; stage 0 must then be throttled by the credits (it is never
more than Q micro-batches ahead of stage 1, checked against the times the processes recorded) and
the run still equals the single-process run that steps after every micro-batch (gradient isolation
makes the pipelined order exact).
"""
import json
import os.path as osp

import pytest
import torch

from pipeline_helpers import load_state, reference_run, spawn, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

Q = 2


def test_async_bounded_queue_throttles_upstream_and_training_progresses(tiny_cls_root, tmp_path):
    cfg = write_config(
        tmp_path / 'cfg.py', tiny_cls_root, cuts=(2, 5), epochs=2, augment=False,
        pipeline=f"dict(schedule='async', micro_batches=4, queue_size={Q}, step_every=1)",
        model_extra=", local_objective=[dict(type='Greedy', head=dict(type='PoolLinearHead')), "
                    "dict(type='Greedy', head=dict(type='TestSlowHead', delay=0.03))]",
        extra="custom_imports = dict(imports=['localvision.utils.setup_env', 'localvision.cls', 'pipeline_helpers'], "
              "allow_failed_imports=False)")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 3)
    s0, s1 = (json.load(open(osp.join(work, 'pipeline_logs', f'summary_rank{r}.json'))) for r in (0, 1))
    n = 2 * 4 * 4  # 2 epochs x 4 iterations x 4 micro-batches
    assert len(s0['sent_log']) == n and len(s1['taken_log']) == n
    taken = {i: t for i, t in s1['taken_log']}
    for i, t_sent, credits in s0['sent_log']:
        assert i + 1 - credits <= Q  # never more than Q micro-batches sent and not yet taken
        if i >= Q:  # message i left only after stage 1 had started micro-batch i - Q
            assert taken[i - Q] <= t_sent
    assert s0['credit_wait_s'] > 0.3  # the slow stage throttled its upstream (~0.03 s x 32 of sleep)
    # losses go down (training on the 64 images of the tiny set, 32 optimizer steps per stage)
    last = [json.loads(line) for line in open(osp.join(work, 'pipeline_logs', 'stage2_replica0.jsonl'))]
    assert len(last) == 8
    assert sum(r['loss'] for r in last[-3:]) < sum(r['loss'] for r in last[:3])
    # one step per micro-batch == the single-process run with batch = micro-batch
    ref = reference_run(cfg, micro_batches=4, iters=8, accumulate=1)
    state = load_state(osp.join(work, 'epoch_2.pth'))
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f'{k}: {m}')
