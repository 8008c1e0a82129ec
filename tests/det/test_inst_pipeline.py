"""Module-parallel (pipeline) training of Mask R-CNN on gloo CPU processes.

The instance demo's K=2 Mask R-CNN (InfoProDet with the mask term) on a timm ResNet-18 with a thin
FPN and heads, 64x64 images, cut after layer2: the sync schedule on 2 processes, each global batch
in 2 micro-batches, gives the parameters and BatchNorm statistics of the single-process
``PerModuleBackward`` run. What crosses the cut: the detached activation, the image, the boxes,
labels and instance masks (module 0's mask term), the ``DetDataSample`` s with their masks (RPN,
box and mask heads read them) and the detached layer1 / layer2 levels the FPN reads. The samplers
take every anchor and proposal (no random draw), so both runs see the same RoIs; no gradient
clipping (the pipeline clips each stage by its own norm).
"""
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'engine'))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from pipeline_helpers import check_trained_like_reference, spawn  # noqa: E402

BASE = osp.join(ROOT, 'configs/det/mask_rcnn_r18_infopro_k2_demo.py')
ITERS = 2
SIZE = 64


@pytest.fixture(scope='module')
def tiny_inst_root(tmp_path_factory):
    from localvision.datasets.synthetic_inst import make_shapes_instances
    root = tmp_path_factory.mktemp('inst_pipe') / 'set'
    return str(make_shapes_instances(root, num_train=8, num_val=4, image_size=SIZE, seed=0))


def write_inst_config(path, data_root, iters=ITERS):
    path.write_text(f"""_base_ = ['{BASE}']
data_root = '{data_root}/'
model = dict(
    split=dict(num_modules=2, cuts=[[2, 1]], strategy='equal', input_size=(3, {SIZE}, {SIZE})),
    local_objective=dict(head=dict(channels=8)),
    neck=dict(out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16), bbox_head=dict(in_channels=16, fc_out_channels=32),
                  mask_roi_extractor=dict(out_channels=16),
                  mask_head=dict(in_channels=16, conv_out_channels=8, num_convs=1)),
    train_cfg=dict(rpn=dict(sampler=dict(num=100000)), rcnn=dict(sampler=dict(num=100000))),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=train_pipeline), **_loader)
val_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=test_pipeline), **_loader)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=None)  # the pipeline clips per stage (docs/module_parallel.md)
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iters}, max_keep_ckpts=1))
pipeline = dict(schedule='sync', micro_batches=2, queue_size=2)
""")
    return str(path)


def test_sync_pipeline_mask_rcnn_equals_single_process_and_exports(tiny_inst_root, tmp_path):
    cfg = write_inst_config(tmp_path / 'inst_pipe.py', tiny_inst_root)
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    exported = check_trained_like_reference(
        cfg, work, ITERS, 2,
        moved=('backbone.model.conv1.weight', 'objectives.0.head.mask.weight', 'backbone.model.layer4.1.conv2.weight',
               'neck.fpn_convs.0.conv.weight', 'roi_head.mask_head.conv_logits.weight'),
        counted=('backbone.model.bn1.num_batches_tracked', 'backbone.model.layer4.1.bn2.num_batches_tracked'))

    import test as test_tool  # tools/test.py
    metrics = test_tool.main([cfg, exported, '--work-dir', str(tmp_path / 'eval')])
    assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0
