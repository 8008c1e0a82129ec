"""tools/dist_train.sh and tools/dist_test.sh on CPU: 2 processes, gloo, through torchrun."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import test as test_tool  # noqa: E402  (tools/test.py)

CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tiny_config(path, data_root, epochs, extra=''):
    path.write_text(f"""_base_ = ['{CONFIG}']
data_root = '{data_root}'
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=4), backbone=dict(model_name='cifar_resnet20'), split=dict(cuts=[2, 5, 8]))
train_cfg = dict(max_epochs={epochs}, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
{extra}
""")
    return str(path)


def launch(script, *args, timeout=600):
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable)
    return subprocess.run(['bash', osp.join(ROOT, 'tools', script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_dist_train_k4_checkpoints_resumes_and_dist_test_matches_test_py(tiny_cls_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg1 = tiny_config(tmp_path / 'e1.py', tiny_cls_root, 1)
    r = launch('dist_train.sh', cfg1, '2', '--work-dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from localvision.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    ck = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=True)
    assert ck['meta']['iter'] == 4  # 64 images, 2 ranks x batch 8
    assert 'LocalDistributedDataParallel' in ck['meta']['cfg']
    cfg2 = tiny_config(tmp_path / 'e2.py', tiny_cls_root, 2)
    r = launch('dist_train.sh', cfg2, '2', '--work-dir', work, '--resume')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert 'Epoch(train) [2][1/4]' in log and 'Epoch(train) [1][' not in log  # continued, not restarted
    ckpt = osp.join(work, 'epoch_2.pth')
    r = launch('dist_test.sh', cfg2, ckpt, '2', '--work-dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dist_acc = float(re.findall(r'accuracy/top1: ([0-9.]+)', r.stdout + r.stderr)[-1])
    single = test_tool.main([cfg2, ckpt, '--work-dir', work])
    assert abs(single['accuracy/top1'] - dist_acc) < 1e-6


def test_a_failing_rank_stops_the_job_quickly_and_is_named(tiny_cls_root, tmp_path):
    hook_mod = tmp_path / 'failing_hook.py'
    hook_mod.write_text('''
import os
from mmengine.hooks import Hook
from localvision.registry import HOOKS

@HOOKS.register_module()
class FailOnRank1(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if int(os.environ["RANK"]) == 1 and runner.iter == 2:
            raise RuntimeError("rank 1 failed on purpose")
''')
    cfg = tiny_config(tmp_path / 'fail.py', tiny_cls_root, 1, extra=(
        "custom_imports = dict(imports=['localvision.utils.setup_env', 'localvision.cls', 'failing_hook'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='localvision.FailOnRank1')]\n"))
    os.environ['PYTHONPATH'] = f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"
    try:
        t0 = time.time()
        r = launch('dist_train.sh', cfg, '2', '--work-dir', str(tmp_path / 'work'), timeout=300)
        elapsed = time.time() - t0
    finally:
        os.environ['PYTHONPATH'] = os.environ['PYTHONPATH'].split(':', 1)[1]
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert 'rank 1 failed on purpose' in out
    assert re.search(r'rank\s*:\s*1', out), out[-2000:]  # torchrun's failure summary names the rank
    assert elapsed < 120
    leftovers = [f for f in os.listdir(tmp_path / 'work') if f.endswith('.tmp')] if osp.isdir(tmp_path / 'work') else []
    assert not leftovers


def test_dist_train_segmentation_uses_the_local_wrapper_and_keeps_local_memory(tmp_path):
    """The seg demo under tools/dist_train.sh: trains and evaluates on CPU with the local data-parallel
    wrapper (not mmengine's DDP), and each rank's peak training memory is that of the single-process
    K=4 run on the same per-rank batch."""
    sys.path.insert(0, osp.join(ROOT, 'tools', 'misc'))
    import make_demo_data
    root = str(tmp_path / 'seg')
    assert make_demo_data.main(['seg', '--out', root, '--num-train', '16', '--num-val', '4']) == 0
    opts = [f'{k}.dataset.data_root={root}' for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    opts += [f'{k}.{o}' for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
             for o in ('batch_size=4', 'num_workers=0', 'persistent_workers=False')]
    opts += ['train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
             'default_hooks.logger.interval=1', 'custom_hooks.0.at_iter=2']
    config = osp.join(ROOT, 'configs/seg/deeplab_infopro_k4_demo.py')
    r = launch('dist_train.sh', config, '2', '--work-dir', str(tmp_path / 'dist'), '--cfg-options', *opts)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert 'LocalDistributedDataParallel' in log and 'MMDistributedDataParallel' not in log
    assert re.search(r'mIoU: [0-9.]+', log)
    import json
    dist_peaks = json.load(open(tmp_path / 'dist' / 'peak_memory.json'))['per_rank']
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir',
                        str(tmp_path / 'single'), '--cfg-options', *opts], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    single = json.load(open(tmp_path / 'single' / 'peak_memory.json'))['peak_bytes']
    assert len(dist_peaks) == 2 and all(abs(p - single) <= 0.1 * single for p in dist_peaks), (dist_peaks, single)
