"""The installed stack: versions as pinned, compiled mmcv ops, and a light `import localvision`."""
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow  # a fresh interpreter imports the package and registers every module
def test_import_localvision_pulls_in_no_task_library():
    code = ('import sys, localvision, localvision.models, localvision.datasets, localvision.engine\n'
            'from localvision.utils.setup_env import register_all_modules\nregister_all_modules()\n'
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmpretrain", "mmseg", "mmdet")]\n'
            'assert not bad, bad\nprint("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr


def test_mmcv_has_compiled_ops_and_nms_runs_on_cpu():
    from mmcv.ops import nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_pinned_stack_imports_together():
    import mmcv
    import mmdet.models  # noqa: F401
    import mmengine
    import mmseg.models  # noqa: F401
    import timm
    import torchvision
    assert torch.__version__.split('+')[0] == '2.13.0'
    assert torchvision.__version__.split('+')[0] == '0.28.0'
    assert (mmcv.__version__, mmengine.__version__) == ('2.1.0', '0.10.7')
    assert timm.__version__ == '1.0.31'


@pytest.mark.gpu
def test_cuda_device_and_nccl_are_chosen_with_a_gpu():
    from localvision.utils import default_device, default_dist_backend
    assert default_device() == 'cuda' and default_dist_backend() == 'nccl'


def test_cpu_device_and_gloo_are_chosen_without_a_gpu(monkeypatch):
    from mmengine.config import Config

    from localvision.utils import default_device, default_dist_backend, resolve_dist_cfg
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert default_device() == 'cpu' and default_dist_backend() == 'gloo'
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='auto'))))
    resolve_dist_cfg(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
        resolve_dist_cfg(Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')))))
