"""Module-parallel (pipeline) training of the detection model on gloo CPU processes.

The demo's K=2 RetinaNet (InfoProDet objective) on a timm ResNet-18 with a thin FPN and head,
64x64 images: the sync schedule on 2 processes, each global batch in 2 micro-batches, gives the
parameters and BatchNorm statistics of the single-process ``PerModuleBackward`` run with gradients
accumulated over the same micro-batches. What crosses the cut: the detached activation, the image
(InfoProDet's decoder), the boxes and labels, the ``DetDataSample`` s (the bbox head's loss reads
them) and the detached layer2 level of module 0 the FPN of module 1 reads. The merged export is
the ordinary single-file checkpoint, which ``tools/test.py`` evaluates (COCO mAP).
"""
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'engine'))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from pipeline_helpers import check_trained_like_reference, spawn  # noqa: E402

BASE = osp.join(ROOT, 'configs/det/retinanet_r18_infopro_k2_demo.py')
ITERS = 3
SIZE = 64


@pytest.fixture(scope='module')
def tiny_det_root(tmp_path_factory):
    """8 train / 4 val images, 64x64, the demo's 5 classes (COCO json)."""
    from localvision.datasets.synthetic_det import make_shapes_detection
    root = tmp_path_factory.mktemp('det_pipe') / 'set'
    return str(make_shapes_detection(root, num_train=8, num_val=4, image_size=SIZE, seed=0))


def write_det_config(path, data_root, iters=ITERS):
    """The demo config made tiny: K=2 cut after layer2 (the FPN reads layer2..layer4, so layer2
    reaches module 1 detached), FPN and head 16 channels wide, images kept at 64x64. No LR
    schedule: ``reference_run`` steps none."""
    path.write_text(f"""_base_ = ['{BASE}']
data_root = '{data_root}/'
model = dict(
    split=dict(num_modules=2, cuts=[[2, 1]], strategy='equal', input_size=(3, {SIZE}, {SIZE})),
    local_objective=dict(head=dict(channels=8)),
    neck=dict(out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1),
    test_cfg=dict(score_thr=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=train_pipeline), **_loader)
val_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=test_pipeline), **_loader)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iters}, max_keep_ckpts=1))
pipeline = dict(schedule='sync', micro_batches=2, queue_size=2)
""")
    return str(path)


def test_sync_pipeline_det_equals_single_process_and_exports(tiny_det_root, tmp_path):
    cfg = write_det_config(tmp_path / 'det_pipe.py', tiny_det_root)
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    exported = check_trained_like_reference(
        cfg, work, ITERS, 2,
        moved=('backbone.model.conv1.weight', 'objectives.0.head.cls.weight', 'backbone.model.layer4.1.conv2.weight',
               'neck.fpn_convs.0.conv.weight', 'bbox_head.retina_cls.weight'),
        counted=('backbone.model.bn1.num_batches_tracked', 'backbone.model.layer4.1.bn2.num_batches_tracked'))

    import test as test_tool  # tools/test.py
    metrics = test_tool.main([cfg, exported, '--work-dir', str(tmp_path / 'eval')])
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
