"""Ctrl-C / SIGTERM in module-parallel training keeps everything trained.

``tools/dist_train.sh`` is interrupted the way a terminal does it (SIGINT to its process group;
torchrun passes it on to the ranks). Stage 0 finishes its iteration and sends a stop down the
pipeline, every stage drains to that iteration boundary and saves; ``--resume`` then ends with the
parameters of the uninterrupted run (the single-process reference, which the sync pipeline equals).
A SIGTERM that reaches one rank only (a scheduler, ``kill``) stops a 2 x 2 grid the same way: the
watchdog spreads the request, and the stage-0 replicas agree on the boundary.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline_helpers import ROOT, free_port, load_state, reference_run, spawn, torchrun, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

HERE = osp.dirname(osp.abspath(__file__))


def _config(tmp_path, data_root, checkpoint='', **kwargs):
    return write_config(
        tmp_path / 'cfg.py', data_root, cuts=(5,), epochs=3, **kwargs,
        model_extra=", local_objective=dict(_delete_=True, type='Greedy', "
                    "head=dict(type='TestSlowHead', delay=0.15))",
        extra="custom_imports = dict(imports=['localvision.utils.setup_env', 'localvision.cls', 'pipeline_helpers'], "
              "allow_failed_imports=False)\n"
              "default_hooks = dict(logger=dict(interval=1), "
              f"checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=-1{checkpoint}))\n"
              "train_cfg = dict(max_epochs=3, val_interval=1000)")


def _lines(path):
    return [json.loads(line) for line in open(path)] if osp.isfile(path) else []


def _start(cfg, nproc, work):
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1',  # as the reference
               PYTHONPATH=HERE + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.Popen(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg, str(nproc), '--work-dir', work],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)  # its own process group, like a terminal's job
    return proc, env


def _same_env(env):
    """What a later ``torchrun`` needs from ``_start``'s environment."""
    return {k: env[k] for k in ('PYTHONPATH', 'OMP_NUM_THREADS')}


def _wait_for_iterations(proc, log, n):
    deadline = time.time() + 180
    while len(_lines(log)) < n and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, 'the run ended before it could be interrupted'


def _worker_pid(port, rank):
    """The pid of the training process of global ``rank`` in the job on ``port`` (Linux /proc)."""
    want = {f'MASTER_PORT={port}'.encode(), f'RANK={rank}'.encode()}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                env = set(open(f'/proc/{d}/environ', 'rb').read().split(b'\0'))
            except OSError:
                continue
            if want <= env and b'TORCHELASTIC_RUN_ID' in b' '.join(env):
                return int(d)
    raise AssertionError(f'no process of rank {rank} found')


def test_ctrl_c_saves_every_stage_at_one_boundary_and_resume_equals_uninterrupted(tiny_cls_root, tmp_path):
    cfg = _config(tmp_path, tiny_cls_root, checkpoint=", save_best='auto'")  # the final validation: the best
    work = str(tmp_path / 'work')
    proc, env = _start(cfg, 2, work)
    log1 = osp.join(work, 'pipeline_logs', 'stage1_replica0.jsonl')
    _wait_for_iterations(proc, log1, 2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    done = len(_lines(log1))
    assert 2 <= done < 12, out[-2000:] + err[-2000:]
    assert f'interrupted (SIGINT) at iteration {done}/12' in err, err[-3000:]
    # every stage stopped at the same boundary and saved it; nothing was exported as final
    assert len(_lines(osp.join(work, 'pipeline_logs', 'stage0_replica0.jsonl'))) == done
    folder = osp.join(work, 'pipeline_ckpt', f'iter_{done}')
    assert sorted(os.listdir(folder)) == ['manifest.json', 'stage0.pth', 'stage1.pth']
    assert json.load(open(osp.join(folder, 'manifest.json')))['iteration'] == done
    assert not osp.exists(osp.join(work, 'epoch_3.pth'))

    r = torchrun(cfg, 2, '--work-dir', work, '--resume', timeout=300,
                 env_extra=_same_env(env))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert [x['iter'] for x in _lines(log1)] == list(range(1, 13))  # continued where it stopped
    state = load_state(osp.join(work, 'epoch_3.pth'))
    # save_best: the only validation (of the export) is the best; kept as mmengine names it
    assert [f for f in os.listdir(work) if f.startswith('best_')] == ['best_accuracy_top1_iter_12.pth']
    best = load_state(osp.join(work, 'best_accuracy_top1_iter_12.pth'))
    assert set(best) == set(state) and all(torch.equal(best[k], state[k]) for k in state)
    assert 'the best checkpoint with' in r.stdout and 'accuracy/top1 at iteration 12' in r.stdout, r.stdout[-2000:]
    ref = reference_run(cfg, micro_batches=4, iters=12)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f'{k}: {m}')


def test_sigterm_to_one_rank_stops_a_grid_at_one_boundary_and_resume_equals_uninterrupted(tiny_cls_root, tmp_path):
    cfg = _config(tmp_path, tiny_cls_root, batch_size=8, augment=False,
                  pipeline="dict(schedule='sync', micro_batches=2, queue_size=2, replicas=2)")
    whole = str(tmp_path / 'whole')
    spawn(cfg, whole, 4)  # uninterrupted: 64 images / (2 replicas x 8) = 4 iterations x 3 epochs
    work = str(tmp_path / 'work')
    proc, env = _start(cfg, 4, work)
    log = osp.join(work, 'pipeline_logs', 'stage1_replica1.jsonl')
    _wait_for_iterations(proc, log, 2)
    os.kill(_worker_pid(env['PORT'], 3), signal.SIGTERM)  # the last stage of replica 1 only
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    done = len(_lines(log))
    assert 2 <= done < 12 and f'interrupted (SIGTERM) at iteration {done}/12' in err, err[-3000:]
    for name in ('stage0_replica0', 'stage0_replica1', 'stage1_replica0'):
        assert len(_lines(osp.join(work, 'pipeline_logs', f'{name}.jsonl'))) == done, name
    assert json.load(open(osp.join(work, 'pipeline_ckpt', f'iter_{done}', 'manifest.json')))['iteration'] == done

    r = torchrun(cfg, 4, '--work-dir', work, '--resume', timeout=300, env_extra=_same_env(env))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    a, b = load_state(osp.join(whole, 'epoch_3.pth')), load_state(osp.join(work, 'epoch_3.pth'))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=lambda m: f'{k}: {m}')
