"""Local detectors built from the configs (tiny overrides) on real mmdet objects."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import localvision.det  # noqa: F401  (registers in mmdet's registries)
from localvision.errors import InputError
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIZE = 64
CONFIGS = {
    'retinanet': 'configs/det/retinanet_r50_infopro_k4.py',
    'fcos': 'configs/det/fcos_r50_infopro_k4.py',
    'faster_rcnn': 'configs/det/faster_rcnn_r50_infopro_k4.py',
    'mask_rcnn': 'configs/det/mask_rcnn_r50_infopro_k4.py',
    'vit': 'configs/det/retinanet_vit_small_infopro_k4.py',
}
TASK_KEYS = {
    'retinanet': {'loss_cls', 'loss_bbox'},
    'fcos': {'loss_cls', 'loss_bbox', 'loss_centerness'},
    'faster_rcnn': {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'},
    'mask_rcnn': {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask', 'm0.loss_det_mask'},
    'vit': {'loss_cls', 'loss_bbox'},
}


def tiny_model_cfg(kind='retinanet', num_modules=2, cuts=None, num_classes=3, **kw):
    """The config's model with a resnet18 (or tiny ViT), 64x64 input and thin heads."""
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[kind]))
    m = cfg.model
    m.split = dict(num_modules=num_modules, cuts=cuts, strategy='equal', input_size=(3, SIZE, SIZE))
    if kind == 'vit':
        m.backbone.update(model_name='vit_tiny_patch16_224', img_size=SIZE, depth=4)
        m.neck.update(out_channels=16, norm_cfg=dict(type='GN', num_groups=4))
        m.backbone.out_blocks = (4,)
    else:
        m.backbone.model_name = 'resnet18'
        m.neck.out_channels = 16
    if num_modules > 1:
        m.local_objective.head = dict(type='DenseDetAuxHead', channels=8)
    else:
        m.local_objective = None
    if kind == 'mask_rcnn':
        m.roi_head.mask_roi_extractor.out_channels = 16
        m.roi_head.mask_head.update(num_convs=1, in_channels=16, conv_out_channels=8, num_classes=num_classes)
    if kind in ('faster_rcnn', 'mask_rcnn'):
        m.rpn_head.feat_channels = 16
        m.rpn_head.in_channels = 16
        m.roi_head.bbox_roi_extractor.out_channels = 16
        m.roi_head.bbox_head.update(in_channels=16, fc_out_channels=32, num_classes=num_classes)
        m.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        m.train_cfg.rcnn.sampler.num = 64
        m.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
    else:
        m.bbox_head.update(num_classes=num_classes, in_channels=16, feat_channels=16, stacked_convs=1)
        if kind == 'fcos':
            m.bbox_head.norm_cfg = dict(type='GN', num_groups=4, requires_grad=True)
    m.update(kw)
    return m.to_dict()


def build(cfg):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
    model.init_weights()
    return model


def batch(n=2, seed=0, num_classes=3, size=SIZE, masks=False):
    """Three boxes per image (with their instance masks: ellipses in the boxes, when ``masks``)."""
    from local_models import box_masks
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)]
    samples = []
    for i in range(n):
        gi = InstanceData()
        gi.bboxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0], [10.0, 40.0, 26.0, 60.0]])
        gi.labels = torch.tensor([0, 1, 2]) % num_classes
        if masks:
            gi.masks = box_masks(gi.bboxes, size)
        ds = DetDataSample()
        ds.gt_instances = gi
        ds.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                             scale_factor=(1.0, 1.0), img_id=i))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


class KeepGrads(OptimWrapper):
    """Steps with lr 0 and keeps the gradients for inspection."""

    def zero_grad(self, **kwargs) -> None:
        pass


def grads_after_step(model, data):
    model.train()
    ow = KeepGrads(torch.optim.SGD(model.parameters(), lr=0.0))
    model.zero_grad(set_to_none=True)
    log = model.train_step(copy.deepcopy(data), ow)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, log


@pytest.mark.parametrize('kind', ['retinanet', 'fcos', 'faster_rcnn', 'mask_rcnn', 'vit'])
def test_losses_prefixed_and_modes(kind):
    model = build(tiny_model_cfg(kind, num_modules=2))
    two_stage = kind in ('faster_rcnn', 'mask_rcnn')
    assert type(model).__name__ == ('LocalTwoStageDetector' if two_stage else 'LocalSingleStageDetector')
    assert model.num_units == 2
    data = model.data_preprocessor(batch(masks=kind == 'mask_rcnn'), True)
    losses = model(**data, mode='loss')
    assert {'m0.loss_det_cls', 'm0.loss_det_box', 'm0.loss_recon'} <= set(losses)
    assert TASK_KEYS[kind] <= set(losses), sorted(losses)
    assert not any(k.startswith('m1.') for k in losses)  # the last module is trained by the head
    model.eval()
    with torch.no_grad():
        out = model(data['inputs'], data['data_samples'], mode='predict')
    assert len(out) == 2 and out[0].pred_instances.bboxes.shape[-1] == 4
    if kind == 'mask_rcnn':  # masks at the image size, one per detection
        pred = out[0].pred_instances
        assert pred.masks.shape == (len(pred.bboxes), SIZE, SIZE) and pred.masks.dtype == torch.bool
    if not two_stage:
        with torch.no_grad():
            feats = model(data['inputs'], mode='tensor')
        assert len(feats) in (2, 3) and len(feats[0]) == 5  # per-level outputs of P3..P7


def test_only_read_levels_are_stored_detached():
    model = build(tiny_model_cfg('retinanet', num_modules=4, cuts=[(1, 1), (2, 1), (3, 1)]))
    model.train()
    ctx = model.make_context(model.data_preprocessor(batch(), True)['inputs'], batch()['data_samples'])
    h = ctx.inputs
    out, _ = model.forward_unit(0, h, ctx)
    assert ctx.extras['levels'] == {}  # layer1 (level 0) is not read by FPN (start_level=1)
    out, _ = model.forward_unit(1, out.detach(), ctx)
    stored = ctx.extras['levels']
    assert set(stored) == {1} and not stored[1].requires_grad and stored[1].grad_fn is None


def test_neck_reading_only_earlier_modules_is_one_clear_error():
    cfg = tiny_model_cfg('retinanet', num_modules=2, cuts=[(4, 0)])
    cfg['neck']['start_level'] = 0
    cfg['neck']['end_level'] = 2  # layer1..layer3 only (inclusive end): all in module 0
    cfg['neck'].update(add_extra_convs=False, num_outs=3)
    with pytest.raises(InputError, match='nothing would train the last module'):
        build(cfg)


def test_frozen_stages_and_norm_eval():
    cfg = tiny_model_cfg('retinanet', num_modules=2)
    cfg['backbone'].update(frozen_stages=1, norm_eval=True)
    model = build(cfg)
    model.train()
    assert not model.backbone.model.conv1.weight.requires_grad
    assert not model.backbone.model.layer1[0].conv1.weight.requires_grad
    assert model.backbone.model.layer2[0].conv1.weight.requires_grad
    assert not model.backbone.model.layer3[0].bn1.training  # norm_eval
    assert model.bbox_head.training
    # from-scratch defaults in the configs: nothing frozen, BN trains
    model = build(tiny_model_cfg('retinanet', num_modules=2))
    model.train()
    assert model.backbone.frozen_stages == -1 and not model.backbone.norm_eval
    assert model.backbone.model.bn1.training and model.backbone.model.conv1.weight.requires_grad


def test_greedy_objective_has_no_decoder():
    cfg = tiny_model_cfg('retinanet', num_modules=2)
    cfg['local_objective'] = dict(type='DetGreedy', head=dict(type='DenseDetAuxHead', channels=8))
    model = build(cfg)
    assert model.objectives[0].decoder is None
    data = model.data_preprocessor(batch(), True)
    losses = model(**data, mode='loss')
    assert 'm0.loss_det_cls' in losses and 'm0.loss_recon' not in losses


def test_unknown_objective_is_one_clear_error():
    cfg = tiny_model_cfg('retinanet', num_modules=2)
    cfg['local_objective'] = dict(type='InfoProDett')
    with pytest.raises(InputError, match="local_objective.type='InfoProDett'.*InfoProDet"):
        build(cfg)


@pytest.mark.parametrize('kind', ['retinanet', 'faster_rcnn', 'mask_rcnn'])
def test_balanced_split_counts_the_heads(kind):
    """The balanced strategy profiles the blocks, the local objectives and the neck + heads with
    their losses (on synthetic boxes) and puts the cuts where the largest module is smallest."""
    cfg = tiny_model_cfg(kind, num_modules=3)
    cfg['split']['strategy'] = 'balanced'
    model = build(cfg)
    assert model.num_units == 3 and len(model.backbone.cuts) == 2
    assert model.backbone.block_costs is not None and len(model.backbone.block_costs) == model.backbone.num_blocks
    data = model.data_preprocessor(batch(masks=kind == 'mask_rcnn'), True)
    assert 'm1.loss_det_cls' in model(**data, mode='loss')


def test_mask_objective_reads_the_instance_masks():
    """InfoProDet(mask_weight>0): module 0's head predicts each class's mask coverage; the targets
    carry the masks; without masks in the data samples the error says how to load them."""
    from localvision.det.objectives import InfoProDet
    cfg = tiny_model_cfg('mask_rcnn', num_modules=2)
    model = build(cfg)
    obj = model.objectives[0]
    assert obj.mask_weight == 1.0 and obj.head.mask.out_channels == 3
    data = model.data_preprocessor(batch(masks=True), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    boxes, labels, masks = ctx.targets[0]
    assert masks.shape == (3, SIZE, SIZE) and masks.dtype == torch.uint8
    # coverage of class 1 on a 2x2 grid: its ellipse (box 30..60 x 20..50) lies mostly in the right half
    cov = InfoProDet.mask_targets(ctx.targets, 3, (2, 2), (SIZE, SIZE))
    assert cov.shape == (2, 3, 2, 2) and float(cov.min()) >= 0 and float(cov.max()) <= 1
    full = masks[1].float().reshape(2, SIZE // 2, 2, SIZE // 2).mean((1, 3))
    torch.testing.assert_close(cov[0, 1], full)
    losses = model(**data, mode='loss')
    assert 'm0.loss_det_mask' in losses and 'loss_mask' in losses

    no_masks = model.data_preprocessor(batch(masks=False), True)
    with pytest.raises(InputError, match=r'reads instance masks.*LoadAnnotations\(with_mask=True\)'):
        model.make_context(no_masks['inputs'], no_masks['data_samples'])


def test_mask_term_off_keeps_the_detection_objective():
    """mask_weight=0 (the detection configs): no mask output, targets are (boxes, labels)."""
    cfg = tiny_model_cfg('mask_rcnn', num_modules=2)
    cfg['local_objective']['mask_weight'] = 0.0
    model = build(cfg)
    assert model.objectives[0].head.mask is None
    data = model.data_preprocessor(batch(masks=True), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    assert len(ctx.targets[0]) == 2
    losses = model(**data, mode='loss')
    assert 'm0.loss_det_mask' not in losses and 'loss_mask' in losses
