"""tools/train.py end to end on a tiny generated set: train, stop, resume from the checkpoint."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import test as test_tool  # noqa: E402  (tools/test.py)
import train as train_tool  # noqa: E402  (tools/train.py)

CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')


def tiny_options(data_root, epochs):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', f'test_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=16', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', 'model.head.num_classes=4',
            'model.backbone.model_name=cifar_resnet20', 'model.split.cuts=[2,5,8]',
            f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1']


class RecordStart(Hook):
    """Records the iteration and optimizer state the (resumed) training starts from."""

    def before_train(self, runner) -> None:
        self.iter, self.epoch = runner.iter, runner.epoch
        self.optim_state = copy.deepcopy(runner.optim_wrapper.state_dict())  # buffers change in place


def test_train_then_resume_continues_from_saved_iteration_and_optimizer(tiny_cls_root, tmp_path):
    work = str(tmp_path / 'work')
    train_tool.main([CONFIG, '--work-dir', work] + tiny_options(tiny_cls_root, 1))
    ckpt_path = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt_path)
    saved = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    iters_per_epoch = saved['meta']['iter']
    assert iters_per_epoch == 4  # 64 images / batch 16

    args = train_tool.parse_args([CONFIG, '--work-dir', work, '--resume'] + tiny_options(tiny_cls_root, 2))
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = RecordStart()
    runner.register_hook(rec)
    runner.train()
    assert (rec.epoch, rec.iter) == (1, iters_per_epoch)
    saved_state = saved['optimizer']['state']
    assert saved_state, 'SGD momentum buffers should be saved'
    for key, st in saved_state.items():
        torch.testing.assert_close(rec.optim_state['state'][key]['momentum_buffer'], st['momentum_buffer'])
    assert runner.iter == 2 * iters_per_epoch and runner.epoch == 2
    metrics = test_tool.main([CONFIG, osp.join(work, 'epoch_2.pth'), '--work-dir', work]
                             + tiny_options(tiny_cls_root, 2))
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


def test_a_checkpoint_of_another_model_is_one_error_line_in_test_and_resume(tiny_cls_root, tmp_path):
    """mmengine loads what fits and warns; tools/test.py and --resume refuse instead. The auxiliary
    nets aside, a checkpoint tests under another objective or K (here K=1, no auxiliary nets)."""
    work = str(tmp_path / 'work')
    train_tool.main([CONFIG, '--work-dir', work] + tiny_options(tiny_cls_root, 1))
    ckpt = osp.join(work, 'epoch_1.pth')
    deeper = ['model.backbone.model_name=cifar_resnet32']
    e2e = ['model.split.cuts=None', 'model.split.num_modules=1']
    with pytest.raises(SystemExit, match=r'^error: checkpoint .*epoch_1.pth does not fit the model of the config: '
                                         r'72 weights of the model missing \(e.g. backbone.model.layer1.3.conv1.weight\); '
                                         r'use the config it was trained with$'):
        test_tool.main([CONFIG, ckpt, '--work-dir', work] + tiny_options(tiny_cls_root, 1) + deeper)
    metrics = test_tool.main([CONFIG, ckpt, '--work-dir', work] + tiny_options(tiny_cls_root, 1) + e2e)
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    for options in (deeper, e2e):  # a resumed run continues the auxiliary nets too
        with pytest.raises(SystemExit, match=r'^error: checkpoint .*epoch_1.pth does not fit the model of the config'):
            train_tool.main([CONFIG, '--work-dir', str(tmp_path / 'other'), '--resume', ckpt]
                            + tiny_options(tiny_cls_root, 2) + options)


def test_checkpoints_need_exactly_the_allow_list_and_plain_torch_load_refuses_them(tiny_cls_root, tmp_path):
    """Checked in clean processes: the bug is real on the pinned torch, and the allow-list covers
    every global an mmengine checkpoint refers to."""
    work = str(tmp_path / 'work')
    train_tool.main([CONFIG, '--work-dir', work] + tiny_options(tiny_cls_root, 1))
    ckpt = osp.join(work, 'epoch_1.pth')
    code = ('import sys, torch\n'
            'from localvision.utils.checkpoint import mmengine_safe_globals, allow_mmengine_checkpoints\n'
            'unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(sys.argv[1]))\n'
            'allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"\n'
            '           for g in mmengine_safe_globals()}\n'
            'print("NOT_ALLOWED", sorted(unsafe - allowed))\n'
            'try:\n    torch.load(sys.argv[1], weights_only=True)\nexcept Exception as e:\n'
            '    print("REFUSED", type(e).__name__)\n'
            'allow_mmengine_checkpoints()\n'
            'ck = torch.load(sys.argv[1], weights_only=True)\n'
            'print("LOADED", ck["meta"]["iter"])\n')
    out = subprocess.run([sys.executable, '-c', code, ckpt], capture_output=True, text=True, check=True).stdout
    assert 'NOT_ALLOWED []' in out
    assert 'REFUSED' in out
    assert 'LOADED 4' in out


def test_corrupt_checkpoint_and_missing_config_give_one_clear_error(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(SystemExit, match=r'error: checkpoint .*bad.pth cannot be loaded'):
        train_tool.main([CONFIG, '--work-dir', str(tmp_path), '--resume', str(bad)])
    with pytest.raises(SystemExit, match=r'error: config file nope.py does not exist'):
        train_tool.main(['nope.py'])


def test_the_getattr_substitute_resolves_only_history_buffer_statistics():
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer

    from localvision.utils.checkpoint import history_buffer_getattr
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_getattr(os, 'system')


def test_ctrl_c_stops_after_the_iteration_and_resume_ends_like_the_uninterrupted_run(tiny_cls_root, tmp_path):
    """A real SIGINT in the middle of epoch 2: the iteration in progress finishes, a checkpoint of
    exactly the finished iterations is saved, and ``--resume`` (skipping the batches of epoch 2
    already trained) ends with the parameters of the run that was never interrupted."""
    import signal

    from localvision.registry import HOOKS

    @HOOKS.register_module(force=True)
    class CtrlCAfter(Hook):
        def __init__(self, iters):
            self.iters = iters

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == self.iters:  # the loop counts this iteration after the hooks
                os.kill(os.getpid(), signal.SIGINT)

    def cfg_for(work, *extra):
        cfg = train_tool.build_cfg(train_tool.parse_args([CONFIG, '--work-dir', work, *extra]
                                                         + tiny_options(tiny_cls_root, 2)))
        cfg.randomness = dict(seed=0)
        cfg.train_dataloader.dataset.pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
        return cfg

    whole, work = str(tmp_path / 'whole'), str(tmp_path / 'work')
    train_tool.train(cfg_for(whole))
    cfg = cfg_for(work)
    assert cfg.train_cfg.type == 'LocalEpochBasedTrainLoop'
    cfg.custom_hooks = [dict(type='localvision.CtrlCAfter', iters=6)]  # 4 iterations per epoch: 2 into epoch 2
    with pytest.raises(SystemExit) as exc:
        train_tool.train(cfg)
    assert exc.value.code == 130
    saved = osp.join(work, 'iter_6_interrupted.pth')
    assert open(osp.join(work, 'last_checkpoint')).read() == saved
    from localvision.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    meta = torch.load(saved, map_location='cpu', weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 6)

    runner = train_tool.train(cfg_for(work, '--resume'))
    assert (runner.epoch, runner.iter) == (2, 8)
    a = torch.load(osp.join(whole, 'epoch_2.pth'), map_location='cpu', weights_only=True)['state_dict']
    b = torch.load(osp.join(work, 'epoch_2.pth'), map_location='cpu', weights_only=True)['state_dict']
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=lambda m: f'{k}: {m}')


def test_sigterm_to_the_process_group_with_data_loader_workers_saves(tiny_cls_root, tmp_path):
    """A scheduler's SIGTERM reaches every process of the job, the data loader's workers too: the
    run still finishes its iteration and saves (worker deaths do not break the iteration)."""
    import signal
    import time
    work = str(tmp_path / 'work')
    opts = [o.replace('train_dataloader.num_workers=0', 'train_dataloader.num_workers=2')
            for o in tiny_options(tiny_cls_root, 50)]
    proc = subprocess.Popen([sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work] + opts,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True)
    lines, deadline = [], time.time() + 180
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if sum('Epoch(train)' in x for x in lines) >= 6:
            os.killpg(proc.pid, signal.SIGTERM)
            break
    out = ''.join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    saved = open(osp.join(work, 'last_checkpoint')).read()
    assert saved.endswith('_interrupted.pth') and 'interrupted (SIGTERM) after iteration' in out, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
