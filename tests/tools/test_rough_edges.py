"""What a newcomer meets: the tools' one-line errors for a missing data set and a Python without the
stack, and mmseg's default ``dist_cfg.backend='nccl'`` in a single-process run on CPU."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from localvision.errors import InputError
from localvision.utils.config import load_config
from localvision.utils.device import init_dist_without_cuda

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import test as test_tool  # noqa: E402  (tools/test.py)
import train as train_tool  # noqa: E402  (tools/train.py)

TOOLS = ['tools/train.py', 'tools/test.py', 'tools/export_checkpoint.py', 'tools/seg_demo.py',
         'tools/misc/make_demo_data.py']
CLS_CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')
SEG_CONFIG = osp.join(ROOT, 'configs/seg/deeplab_infopro_k4.py')


@pytest.mark.parametrize('tool', TOOLS)
def test_a_python_without_the_stack_gets_one_line_saying_how_to_get_it(tool):
    # -S: no site-packages, so neither torch nor mmengine can be imported
    proc = subprocess.run([sys.executable, '-S', osp.join(ROOT, tool), '--help'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('error: ') and 'run `source .venv/bin/activate` or `make setup`' in lines[0]
    assert 'torch' in lines[0] and 'mmengine' in lines[0]


def test_train_and_test_without_the_data_end_in_one_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/cityscapes here
    with pytest.raises(SystemExit) as e:
        train_tool.main([SEG_CONFIG, '--work-dir', str(tmp_path / 'w')])
    assert str(e.value).startswith('error: CityscapesDataset of train_dataloader: data root data/cityscapes/ '
                                   'does not exist; download')
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': {}}, ckpt)
    with pytest.raises(SystemExit) as e:
        test_tool.main([SEG_CONFIG, str(ckpt), '--work-dir', str(tmp_path / 'w')])
    assert str(e.value).startswith('error: CityscapesDataset of test_dataloader: data root data/cityscapes/')


@pytest.mark.slow
def test_train_without_the_data_in_a_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), SEG_CONFIG], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: CityscapesDataset of train_dataloader')


def test_nccl_backend_is_checked_only_when_a_process_group_is_made(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    nccl = {'env_cfg.dist_cfg.backend': 'nccl'}  # as mmseg's default_runtime.py sets it
    cfg = load_config(CLS_CONFIG, nccl)  # a single process: no group, no check
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    init_dist_without_cuda('none', 'nccl')  # nothing to start
    with pytest.raises(InputError, match="backend='nccl' needs CUDA"):
        load_config(CLS_CONFIG, nccl, launcher='pytorch')
    with pytest.raises(InputError, match="backend='nccl' needs CUDA"):
        init_dist_without_cuda('pytorch', 'nccl')


def test_more_data_parallel_processes_than_gpus_end_in_one_error_line(monkeypatch):
    """tools/dist_train.sh CONFIG 2 on a machine with one GPU, for a config without a pipeline
    section: rank 1 says how many processes to launch instead of mmengine's raw CUDA error."""
    cfg = load_config(CLS_CONFIG, launcher='pytorch')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # torch reports one GPU
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_RANK', '1')
    with pytest.raises(SystemExit) as e:
        train_tool.train(cfg)
    assert str(e.value).startswith('error: data-parallel training runs one process per GPU: this process has '
                                   'LOCAL_RANK 1, this machine 1 GPU(s); launch tools/dist_train.sh CONFIG 1')


def test_nccl_for_stages_that_share_a_gpu_ends_in_one_error_line(monkeypatch):
    """tools/pipeline_train.sh with a K=4 config that names nccl, on a machine with one GPU: the
    four stages would share it, which nccl refuses at its first transfer; the tool says so first."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # torch reports one GPU
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4')
    with pytest.raises(SystemExit) as e:
        train_tool.main([osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4_pipeline.py'), '--launcher',
                         'pytorch', '--cfg-options', 'env_cfg.dist_cfg.backend=nccl'])
    assert str(e.value) == ("error: env_cfg.dist_cfg.backend='nccl' needs a GPU for each process: 4 stage processes "
                            "run on this machine, which has 1 GPU(s); use 'gloo' or 'auto' (the stages then share "
                            "the GPUs, tensors cross the cuts through the CPU) or launch on as many GPUs as stages")


@pytest.mark.slow
def test_a_stock_mmseg_runtime_trains_in_one_process_on_cpu(tiny_cls_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    roots = [f'{s}_dataloader.dataset.data_root={tiny_cls_root}' for s in ('train', 'val', 'test')]
    runner = train_tool.main([CLS_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *roots,
                              'env_cfg.dist_cfg.backend=nccl', 'model.head.num_classes=4',
                              'model.backbone.model_name=cifar_resnet20', 'model.split.cuts=[2,5,8]',
                              'train_dataloader.batch_size=32', 'train_dataloader.num_workers=0',
                              'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
                              'val_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1'])
    assert runner.iter == 2 and runner.cfg.env_cfg.dist_cfg.backend == 'nccl'
