"""Classification needs neither mmseg nor mmdet: without them, localvision imports and a K=2 model
from a classification config (mmpretrain, mmcv) trains a step.

Run as a script (``python tests/test_install_core.py``) in an environment made by ``pip install -e .``
to check the same there; the test below hides the OpenMMLab packages from a subprocess.
"""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_greedy_k2.py')
OPENMMLAB = ('mmseg', 'mmdet')


def hide_openmmlab() -> None:
    """Make ``import mmseg`` / ``mmdet`` fail as if they were not installed."""
    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in OPENMMLAB:
                raise ModuleNotFoundError(f'No module named {name!r}', name=name)

    sys.meta_path.insert(0, Hide())


def classification_train_step() -> dict:
    """Build the K=2 greedy ResNet-32 of ``CONFIG`` (4 classes) and train one step on a random batch."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    from localvision.utils.setup_env import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(CONFIG)  # its custom_imports: localvision.cls
    init_default_scope(cfg.default_scope)
    cfg.model.head.num_classes = 4
    model = MODELS.build(cfg.model)
    assert model.num_units == 2
    batch = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(8)],
                 data_samples=[DataSample().set_gt_label(i % 4) for i in range(8)])
    log = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert all(torch.isfinite(v).all() for v in log.values())
    assert not any(name.split('.')[0] in OPENMMLAB for name in sys.modules)
    return {k: v.item() for k, v in log.items()}


@pytest.mark.slow  # starts a process and trains
def test_classification_trains_without_mmseg_mmdet():
    code = (f'import sys; sys.path.insert(0, {osp.dirname(osp.abspath(__file__))!r}); import test_install_core as t; '
            't.hide_openmmlab(); print(t.classification_train_step())')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'm0.loss_cls' in proc.stdout


if __name__ == '__main__':
    print(classification_train_step())
