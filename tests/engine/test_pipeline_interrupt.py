"""Ctrl-C in module-parallel training keeps everything trained.

``tools/dist_train.sh`` is interrupted the way a terminal does it (SIGINT to its process group;
torchrun passes it on to the ranks). Stage 0 finishes its iteration and sends a stop down the
pipeline, every stage drains to that iteration boundary and saves; ``--resume`` then ends with the
parameters of the uninterrupted run (the single-process reference, which the sync pipeline equals).
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import torch

from pipeline_helpers import ROOT, free_port, load_state, reference_run, torchrun, write_config

HERE = osp.dirname(osp.abspath(__file__))


def _config(tmp_path, data_root):
    return write_config(
        tmp_path / 'cfg.py', data_root, cuts=(5,), epochs=3,
        model_extra=", local_objective=dict(_delete_=True, type='Greedy', "
                    "head=dict(type='TestSlowHead', delay=0.15))",
        extra="custom_imports = dict(imports=['localvision.utils.setup_env', 'pipeline_helpers'], "
              "allow_failed_imports=False)\n"
              "default_hooks = dict(logger=dict(interval=1), "
              "checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=-1))\n"
              "train_cfg = dict(max_epochs=3, val_interval=1000)")


def _lines(path):
    return [json.loads(line) for line in open(path)] if osp.isfile(path) else []


def test_ctrl_c_saves_every_stage_at_one_boundary_and_resume_equals_uninterrupted(tiny_cls_root, tmp_path):
    cfg = _config(tmp_path, tiny_cls_root)
    work = str(tmp_path / 'work')
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
               PYTHONPATH=HERE + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.Popen(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg, '2', '--work-dir', work],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)  # its own process group, like a terminal's job
    log1 = osp.join(work, 'pipeline_logs', 'stage1_replica0.jsonl')
    deadline = time.time() + 180
    while len(_lines(log1)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, 'the run ended before it could be interrupted'
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
                 env_extra=dict(PYTHONPATH=env['PYTHONPATH']))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert [x['iter'] for x in _lines(log1)] == list(range(1, 13))  # continued where it stopped
    state = load_state(osp.join(work, 'epoch_3.pth'))
    ref = reference_run(cfg, micro_batches=4, iters=12)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f'{k}: {m}')
