"""Gradient isolation of the local detectors, and K=1 equals stock mmdet RetinaNet."""
import copy

import torch

from test_local_detector import batch, build, grads_after_step, tiny_model_cfg  # noqa: E402


def assert_exported_detector_predicts_the_same(local, stock_cfg: dict) -> None:
    """The stock detector of ``stock_cfg`` loads the export strictly and detects what ``local`` does."""
    from localvision.det.export import export_state_dict
    plain = build(stock_cfg)
    plain.load_state_dict(export_state_dict(local), strict=True)
    local.eval(), plain.eval()
    data = batch()
    with torch.no_grad():
        d = local.data_preprocessor(copy.deepcopy(data), False)
        a = local(**d, mode='predict')
        b = plain(**d, mode='predict')
    for x, y in zip(a, b):
        torch.testing.assert_close(x.pred_instances.bboxes, y.pred_instances.bboxes)
        torch.testing.assert_close(x.pred_instances.scores, y.pred_instances.scores)


def test_earlier_module_trained_only_by_its_local_loss():
    """Module 0's gradients come from its local loss alone: with the local loss zeroed they are
    zero while the head still trains; changing the head leaves them unchanged; JointBackward
    (one backward of the summed losses) gives the same gradients."""
    cfg = tiny_model_cfg('retinanet', num_modules=2, cuts=[(2, 1)])  # layer2 (an FPN level) in module 0
    model = build(cfg)
    assert model.backbone.level_modules() == [0, 0, 1, 1] and model.levels_read_by_neck() == [1, 2, 3]
    data = batch()
    unit_of = {id(p): k for k in range(model.num_units) for p in model.unit_parameters(k)}
    named = dict(model.named_parameters())
    g1, _ = grads_after_step(model, data)
    m0 = [n for n in g1 if n.startswith('backbone.') and unit_of[id(named[n])] == 0]
    # (timm zero-initialises each block's last BN gamma, so the convs inside a block start with zero
    # grads; the stem and the BNs' affine parameters get gradients through the residual paths)
    assert m0 and g1['backbone.model.conv1.weight'].abs().sum() > 0
    assert g1['backbone.model.layer2.1.bn2.weight'].abs().sum() > 0

    with torch.no_grad():  # a different head: the last unit's loss changes, module 0's must not
        for p in model.bbox_head.parameters():
            p.mul_(2.0).add_(0.05)
        for p in model.neck.parameters():
            p.mul_(1.5)
    g2, _ = grads_after_step(model, data)
    for n in g1:
        if unit_of[id(named[n])] == 0:
            torch.testing.assert_close(g1[n], g2[n], rtol=0, atol=0)
    assert any(not torch.equal(g1[n], g2[n]) for n in g1 if n.startswith('bbox_head.'))

    # the local loss zeroed: module 0 gets no gradient at all, the head still does
    obj = model.objectives[0]
    orig = obj.loss
    obj.loss = lambda feat, ctx: {k: v * 0.0 for k, v in orig(feat, ctx).items()}
    g0, _ = grads_after_step(model, data)
    del obj.loss
    assert m0
    for n in m0:
        assert n not in g0 or g0[n].abs().sum() == 0, n
    assert any(g0[n].abs().sum() > 0 for n in g0 if n.startswith('bbox_head.'))
    assert any(g0[n].abs().sum() > 0 for n in g0 if n.startswith('neck.'))

    joint = build(dict(cfg, executor=dict(type='JointBackward')))
    g3, _ = grads_after_step(joint, data)
    assert set(g3) == set(g1)
    for n in g1:
        torch.testing.assert_close(g3[n], g1[n], rtol=1e-4, atol=1e-6)


def test_k1_equals_stock_mmdet_retinanet():
    """K=1 is plain RetinaNet: with the exported weights mmdet's own ResNet-18 RetinaNet gives the
    same gradients and the same detections."""
    from localvision.det.export import export_state_dict, stock_model_cfg
    local_cfg = tiny_model_cfg('retinanet', num_modules=1)
    local = build(local_cfg)
    plain = build(stock_model_cfg(local_cfg, local))
    assert type(plain).__name__ == 'SingleStageDetector'
    plain.load_state_dict(export_state_dict(local), strict=True)
    data = batch()
    g_local, _ = grads_after_step(local, data)
    plain.train()
    plain.zero_grad(set_to_none=True)
    d = plain.data_preprocessor(copy.deepcopy(data), True)
    loss, _ = plain.parse_losses(plain(**d, mode='loss'))
    loss.backward()
    n = 0
    for name, p in plain.named_parameters():
        lname = name.replace('backbone.', 'backbone.model.', 1) if name.startswith('backbone.') else name
        torch.testing.assert_close(g_local[lname], p.grad, rtol=1e-4, atol=1e-6)
        n += 1
    assert n > 40
    local.eval(), plain.eval()
    with torch.no_grad():
        d = local.data_preprocessor(copy.deepcopy(data), False)
        a = local(**d, mode='predict')
        b = plain(**d, mode='predict')
    torch.testing.assert_close(a[0].pred_instances.bboxes, b[0].pred_instances.bboxes)
    torch.testing.assert_close(a[0].pred_instances.scores, b[0].pred_instances.scores)


def test_two_stage_export_predicts_the_same_in_stock_mmdet():
    """Faster R-CNN (K=2) exported to mmdet's TwoStageDetector with mmdet's ResNet-18."""
    from localvision.det.export import stock_model_cfg
    cfg = tiny_model_cfg('faster_rcnn', num_modules=2)
    local = build(cfg)
    stock_cfg = stock_model_cfg(cfg, local)
    assert stock_cfg['type'] == 'TwoStageDetector' and stock_cfg['backbone']['type'] == 'ResNet'
    assert 'local_objective' not in stock_cfg and 'split' not in stock_cfg
    assert_exported_detector_predicts_the_same(local, stock_cfg)


def test_mask_rcnn_k1_equals_stock_mmdet_mask_rcnn():
    """K=1 Mask R-CNN is mmdet's MaskRCNN with mmdet's ResNet-18: same gradients (RPN, box and
    mask heads, backbone) with the exported weights."""
    from localvision.det.export import export_state_dict, stock_model_cfg
    local_cfg = tiny_model_cfg('mask_rcnn', num_modules=1)
    local = build(local_cfg)
    plain = build(stock_model_cfg(local_cfg, local))
    assert type(plain).__name__ == 'MaskRCNN' and type(plain.backbone).__name__ == 'ResNet'
    plain.load_state_dict(export_state_dict(local), strict=True)
    data = batch(masks=True)
    torch.manual_seed(3)  # the RoI samplers draw at random
    g_local, log = grads_after_step(local, data)
    assert 'loss_mask' in log
    plain.train()
    plain.zero_grad(set_to_none=True)
    d = plain.data_preprocessor(copy.deepcopy(data), True)
    torch.manual_seed(3)
    loss, _ = plain.parse_losses(plain(**d, mode='loss'))
    loss.backward()
    n = 0
    for name, p in plain.named_parameters():
        lname = name.replace('backbone.', 'backbone.model.', 1) if name.startswith('backbone.') else name
        torch.testing.assert_close(g_local[lname], p.grad, rtol=1e-4, atol=1e-6, msg=name)
        n += name.startswith('roi_head.mask_head.')
    assert n > 0


def test_mask_rcnn_export_predicts_the_same_masks_in_stock_mmdet():
    """Mask R-CNN (K=2, InfoProDet with the mask term) exported to mmdet's MaskRCNN: the same
    boxes, scores and masks; the local objective (with its mask output) is dropped."""
    from localvision.det.export import export_state_dict, stock_model_cfg
    cfg = tiny_model_cfg('mask_rcnn', num_modules=2)
    local = build(cfg)
    stock_cfg = stock_model_cfg(cfg, local)
    assert stock_cfg['type'] == 'MaskRCNN' and 'local_objective' not in stock_cfg
    plain = build(stock_cfg)
    state = export_state_dict(local)
    assert not any(k.startswith('objectives.') for k in state)
    plain.load_state_dict(state, strict=True)
    local.eval(), plain.eval()
    with torch.no_grad():
        for p in local.roi_head.parameters():  # move away from the init so that masks differ per class
            p.add_(0.01 * torch.randn_like(p))
        plain.load_state_dict(export_state_dict(local), strict=True)
        d = local.data_preprocessor(copy.deepcopy(batch(masks=True)), False)
        a = local(**d, mode='predict')
        b = plain(**d, mode='predict')
    for x, y in zip(a, b):
        assert len(x.pred_instances) > 0
        torch.testing.assert_close(x.pred_instances.bboxes, y.pred_instances.bboxes)
        torch.testing.assert_close(x.pred_instances.scores, y.pred_instances.scores)
        assert torch.equal(x.pred_instances.masks, y.pred_instances.masks)


def test_a_non_resnet_backbone_exports_to_mmpretrain_timm_backbone():
    """RetinaNet (K=2) on a RegNet, which mmdet's ResNet cannot express: exported to mmpretrain's
    ``TIMMBackbone(features_only=True)``, loaded strictly, the same detections."""
    import mmpretrain.models  # noqa: F401  (what the exported config imports)
    from localvision.det.export import stock_model_cfg
    cfg = tiny_model_cfg('retinanet', num_modules=2)
    cfg['backbone']['model_name'] = 'regnetx_002'
    local = build(cfg)
    stock_cfg = stock_model_cfg(cfg, local)
    assert stock_cfg['backbone']['type'] == 'mmpretrain.TIMMBackbone' and stock_cfg['backbone']['features_only']
    assert_exported_detector_predicts_the_same(local, stock_cfg)
