"""Module-parallel (pipeline) training of the segmentation model on gloo CPU processes.

A K=2 DeepLabV3 (InfoPro seg objective, mmseg FCN auxiliary head) on a thin CIFAR ResNet-20, 32x32
images: the sync schedule on 2 processes, each global batch in 2 micro-batches, gives the
parameters and BatchNorm statistics of the single-process ``PerModuleBackward`` run with gradients
accumulated over the same micro-batches. What crosses the cut: the detached activation, the image
(InfoPro's decoder), the labels, the ``SegDataSample`` s (the decode and auxiliary heads read them)
and the detached levels of module 0 the heads of module 1 read. The merged export is the ordinary
single-file checkpoint, which ``tools/test.py`` evaluates.
"""
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'engine'))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from pipeline_helpers import check_trained_like_reference, spawn  # noqa: E402

BASE = osp.join(ROOT, 'configs/seg/deeplab_infopro_k4_demo.py')
ITERS = 3


@pytest.fixture(scope='module')
def tiny_seg_root(tmp_path_factory):
    """8 train / 4 val images, 32x32, the demo's 6 classes (mmseg folder layout)."""
    from localvision.datasets.synthetic_seg import make_shapes_segmentation
    root = tmp_path_factory.mktemp('seg_pipe') / 'set'
    return str(make_shapes_segmentation(root, num_train=8, num_val=4, image_size=32, seed=0))


def write_seg_config(path, data_root, iters=ITERS):
    """The demo config made tiny: K=2 cut after layer1; the decode head reads layer3 (module 1),
    the auxiliary head layer1 (module 0, reaches module 1 detached) and layer2 (module 1), so it
    is trained in module 1. Dropout is off: each stage draws from its own RNG stream, so its masks
    would differ from the single-process run's. No LR schedule: ``reference_run`` steps none."""
    path.write_text(f"""_base_ = ['{BASE}']
data_root = '{data_root}'
crop_size = (32, 32)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(model_name='cifar_resnet20'),
    split=dict(num_modules=2, cuts=[[1, 2]], strategy='equal', input_size=(3, 32, 32)),
    local_objective=dict(head=dict(channels=8, dropout=0.0), decoder=dict(widths=(8, 8, 4))),
    decode_head=dict(channels=8, dilations=(1, 2), dropout_ratio=0.0),
    auxiliary_head=dict(channels=4, dropout_ratio=0.0, in_index=[1, 2], input_transform='resize_concat'))
_loader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
train_dataloader = dict(batch_size=4, **_loader)
val_dataloader = dict(batch_size=4, **_loader)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-2))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iters}, max_keep_ckpts=1))
custom_hooks = []
pipeline = dict(schedule='sync', micro_batches=2, queue_size=2)
""")
    return str(path)


def test_sync_pipeline_seg_equals_single_process_and_exports(tiny_seg_root, tmp_path):
    cfg = write_seg_config(tmp_path / 'seg_pipe.py', tiny_seg_root)
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    exported = check_trained_like_reference(
        cfg, work, ITERS, 2,
        moved=('backbone.model.conv1.weight', 'objectives.0.head.conv.weight', 'backbone.model.layer3.2.conv2.weight',
               'decode_head.conv_seg.weight', 'auxiliary_head.conv_seg.weight'),
        counted=('backbone.model.bn1.num_batches_tracked', 'backbone.model.layer3.2.bn2.num_batches_tracked'))

    import test as test_tool  # tools/test.py
    metrics = test_tool.main([cfg, exported, '--work-dir', str(tmp_path / 'eval')])
    assert 0.0 <= metrics['mIoU'] <= 100.0
