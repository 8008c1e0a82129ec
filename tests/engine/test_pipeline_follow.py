"""Module-parallel training of objectives that read the next module's weights (MAN's EMA).

Stage k+1 sends those weights back to stage k after every iteration
(:mod:`localvision.engine.pipeline.follow`). With ``pipeline.follow_lag=0`` the run equals the
single-process one; with L >= 1 iteration t of module k reads the weights module k+1 had after
iteration t-L-1, which the stage checkpoints of every iteration let us check exactly.
"""
import json
import os.path as osp

import pytest
import torch

from pipeline_helpers import load_state, reference_run, spawn, write_config

pytestmark = pytest.mark.slow  # starts processes: left out of `pytest -m "not slow"`

MAN = ", local_objective=dict(_delete_=True, type='MAN', momentum={m})"


def _ema_keys(state, k=0):
    """State keys of MAN's EMA copy in objective ``k``."""
    ema = sorted(n for n in state if n.startswith(f'objectives.{k}.ema.'))
    assert ema
    return ema


def test_follow_lag_0_equals_the_single_process_run(tiny_cls_root, tmp_path):
    """K=2, MAN (m=0.9) on greedy, sync schedule, 4 micro-batches: every weight, MAN's EMA copy
    included, equals the single-process PerModuleBackward run, also when resumed half-way."""
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,), model_extra=MAN.format(m=0.9),
                       pipeline="dict(schedule='sync', micro_batches=4, queue_size=2, follow_lag=0)",
                       extra="default_hooks = dict(checkpoint=dict(interval=2, by_epoch=False, max_keep_ckpts=-1))")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    state = load_state(osp.join(work, 'epoch_1.pth'))
    ref = reference_run(cfg, micro_batches=4, iters=4).state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f'{k}: {m}')
    init = reference_run(cfg, micro_batches=4, iters=0).state_dict()
    ema = _ema_keys(state)
    assert any(not torch.equal(state[k], init[k]) for k in ema)  # the EMA moved with module 1
    summary = json.load(open(osp.join(work, 'pipeline_logs', 'summary_rank0.json')))
    assert [tuple(e) for e in summary['follow_log']] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert json.load(open(osp.join(work, 'pipeline_logs', 'summary_rank1.json')))['follow_sent'] == [0, 1, 2, 3]
    # resumed at iteration 2: module 1 sends its restored weights first, and the run ends the same
    resumed = str(tmp_path / 'resumed')
    spawn(cfg, resumed, 2, options={'resume': True,
                                    'load_from': osp.join(work, 'pipeline_ckpt', 'iter_2', 'manifest.json')})
    again = load_state(osp.join(resumed, 'epoch_1.pth'))
    for k, v in state.items():
        torch.testing.assert_close(again[k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f'{k}: {m}')
    assert json.load(open(osp.join(resumed, 'pipeline_logs', 'summary_rank1.json')))['follow_sent'] == [2, 3]


@pytest.mark.parametrize('schedule', ['sync', 'async'])
def test_follow_lag_reads_weights_lag_iterations_old(tiny_cls_root, tmp_path, schedule):
    """K=3, MAN at both cuts with m=0.5, follow_lag=1: module k's EMA after training is the EMA
    recurrence over module k+1's weights of one iteration earlier, read from the stage
    checkpoints of every iteration; the upstream stage read exactly those. The async schedule
    (a step after every micro-batch) sends the weights at the same iteration boundaries."""
    m, lag, micro = 0.5, 1, 2
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(3, 6), model_extra=MAN.format(m=m),
                       pipeline=f"dict(schedule='{schedule}', micro_batches={micro}, queue_size=2, follow_lag={lag})",
                       extra="default_hooks = dict(checkpoint=dict(interval=1, by_epoch=False, max_keep_ckpts=-1))")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 3)
    from localvision.engine.pipeline.checkpoint import merged_state_dict
    iters = 4
    states = {j: merged_state_dict(osp.join(work, 'pipeline_ckpt', f'iter_{j}', 'manifest.json'))
              for j in range(1, iters + 1)}
    states[0] = reference_run(cfg, micro_batches=micro, iters=0).state_dict()
    model = reference_run(cfg, micro_batches=micro, iters=0)
    for k in (0, 1):
        man = model.objectives[k]
        live = {id(p): n for n, p in model.named_parameters()}
        live_keys = [live[id(p)] for p in man.next_module_parameters()]
        ema_keys = [f'objectives.{k}.ema.{n}' for n, _ in man.ema.named_parameters()]
        assert len(live_keys) == len(ema_keys) and live_keys
        ema = [states[0][e].clone() for e in ema_keys]
        for t in range(iters):  # every micro-batch's forward updates the EMA once
            src = [states[max(t - lag, 0)][n] for n in live_keys]
            for _ in range(micro):
                ema = [e.lerp(s, 1 - m) for e, s in zip(ema, src)]
        for e_key, e in zip(ema_keys, ema):
            torch.testing.assert_close(states[iters][e_key], e, rtol=1e-5, atol=1e-6, msg=lambda s: f'{e_key}: {s}')
        summary = json.load(open(osp.join(work, 'pipeline_logs', f'summary_rank{k}.json')))
        read = {}  # weights index -> the first iteration that read it
        for t in range(iters):
            read.setdefault(max(t - lag, 0), t)
        assert [tuple(x) for x in summary['follow_log']] == sorted(read.items())
    # module 2 (the last) is read by module 1 and sends only what is read: f_0 .. f_{iters-1-lag}
    assert json.load(open(osp.join(work, 'pipeline_logs', 'summary_rank2.json')))['follow_sent'] == [0, 1, 2]
