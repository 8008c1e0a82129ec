"""LocalEncoderDecoder on tiny real mmseg objects: K=1 is EncoderDecoder, no gradient crosses a cut."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import localvision.seg  # noqa: F401  (registers in mmseg's registries)
from localvision.errors import InputError
from localvision.seg.export import export_state_dict
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

NORM = dict(type='BN', requires_grad=True)
SIZE = 64


def tiny_cfg(num_modules=1, cuts=None, decode='aspp', **kw):
    if decode == 'aspp':
        head = dict(type='ASPPHead', in_channels=512, in_index=3, channels=16, dilations=(1, 2), dropout_ratio=0.0,
                    num_classes=4, norm_cfg=NORM, align_corners=False)
    else:  # every level feeds the decode head (UPerNet)
        head = dict(type='UPerHead', in_channels=[64, 128, 256, 512], in_index=[0, 1, 2, 3], pool_scales=(1, 2),
                    channels=16, dropout_ratio=0.0, num_classes=4, norm_cfg=NORM, align_corners=False)
    cfg = dict(
        type='LocalEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, size=(SIZE, SIZE), pad_val=0, seg_pad_val=255),
        backbone=dict(model_name='resnet18d', pretrained=False, output_stride=8),
        split=dict(num_modules=num_modules, cuts=cuts, input_size=(3, SIZE, SIZE)),
        local_objective=None if num_modules == 1 else dict(type='InfoProSeg', head=dict(type='SegAuxHead',
                                                                                        channels=16, dropout=0.0)),
        decode_head=head,
        auxiliary_head=dict(type='FCNHead', in_channels=256, in_index=2, channels=8, num_convs=1, concat_input=False,
                            dropout_ratio=0.0, num_classes=4, norm_cfg=NORM, align_corners=False,
                            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    cfg.update(kw)
    return cfg


def build(cfg):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg))


def batch(n=2, seed=0, num_classes=4):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8) for _ in range(n)]
    samples = []
    for _ in range(n):
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, SIZE, SIZE), generator=g))
        ds.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


class KeepGrads(OptimWrapper):
    """Steps with lr 0 and keeps the gradients for inspection."""

    def zero_grad(self, **kwargs) -> None:
        pass


def grads_after_step(model, data):
    """Gradients of one train_step (SGD with lr 0, so nothing moves)."""
    model.train()
    ow = KeepGrads(torch.optim.SGD(model.parameters(), lr=0.0))
    model.zero_grad(set_to_none=True)
    model.train_step(copy.deepcopy(data), ow)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_k1_gradients_equal_plain_encoder_decoder():
    local = build(tiny_cfg())
    plain_cfg = tiny_cfg()
    for k in ('split', 'local_objective'):
        plain_cfg.pop(k)
    plain_cfg['type'] = 'EncoderDecoder'
    plain_cfg['backbone'] = dict(type='TIMMBackbone', model_name='resnet18d', features_only=True, pretrained=False,
                                 output_stride=8, out_indices=(1, 2, 3, 4))
    plain = build(plain_cfg)
    plain.load_state_dict(export_state_dict(local), strict=True)
    data = batch()
    g_local = grads_after_step(local, data)
    plain.train()
    plain.zero_grad(set_to_none=True)
    d = plain.data_preprocessor(copy.deepcopy(data), True)
    losses = plain(**d, mode='loss')
    loss, _ = plain.parse_losses(losses)
    loss.backward()
    n = 0
    for name, p in plain.named_parameters():
        lname = name.replace('backbone.timm_model.', 'backbone.model.')
        assert p.grad is not None, name
        torch.testing.assert_close(g_local[lname], p.grad, rtol=1e-4, atol=1e-6)
        n += 1
    assert n > 50
    # predictions equal too
    local.eval(), plain.eval()
    x = local.data_preprocessor(copy.deepcopy(data), False)['inputs']
    torch.testing.assert_close(local(x, mode='tensor'), plain(x, mode='tensor'))


@pytest.mark.parametrize('decode', ['aspp', 'uper'])
def test_no_gradient_crosses_a_cut(decode):
    """Earlier modules' gradients do not change when later losses change, even where their
    levels feed the decode head (UPerHead reads layer1..layer4, spread over 4 modules)."""
    cfg = tiny_cfg(num_modules=4, cuts=[(1, 1), (2, 1), (3, 1)], decode=decode)
    model = build(cfg)
    assert model.backbone.level_modules() == [0, 1, 2, 3]
    data = batch()
    g1 = grads_after_step(model, data)
    with torch.no_grad():  # change the decode head: the last unit's loss changes
        for p in model.decode_head.parameters():
            p.mul_(3.0).add_(0.1)
    g2 = grads_after_step(model, data)
    early = [n for n in g1 if n.startswith('backbone.') and model.backbone.module_parameters(0)]
    unit_of = {}
    for k in range(model.num_units):
        for p in model.unit_parameters(k):
            unit_of[id(p)] = k
    named = dict(model.named_parameters())
    changed_last = False
    for n in g1:
        if unit_of[id(named[n])] < model.num_units - 1:
            torch.testing.assert_close(g1[n], g2[n], rtol=0, atol=0)
        elif not torch.equal(g1[n], g2[n]):
            changed_last = True
    assert changed_last and early
    # summing all losses and one backward (JointBackward) gives the same gradients: the cuts are real
    joint = build(dict(cfg, executor=dict(type='JointBackward')))
    g3 = grads_after_step(joint, data)
    assert set(g3) == set(g1)
    for n in g1:
        torch.testing.assert_close(g3[n], g1[n], rtol=1e-4, atol=1e-6)


def test_losses_prefixed_and_modes():
    model = build(tiny_cfg(num_modules=2, cuts=[(3, 0)]))
    data = model.data_preprocessor(batch(), True)
    losses = model(**data, mode='loss')
    assert {'m0.loss_seg', 'm0.loss_recon', 'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    model.eval()
    x = data['inputs']
    assert model(x, mode='tensor').shape == (2, 4, SIZE // 8, SIZE // 8)
    out = model(x, data['data_samples'], mode='predict')
    assert out[0].pred_sem_seg.data.shape == (1, SIZE, SIZE)


def test_bad_in_index_is_one_clear_error():
    cfg = tiny_cfg()
    cfg['decode_head']['in_index'] = 7
    with pytest.raises(InputError, match=r'decode_head.in_index=7 .*4 levels'):
        build(cfg)
    cfg = tiny_cfg(num_modules=2, cuts=[(4, 0)])
    cfg['decode_head']['in_index'] = 2  # layer3 only: produced before the last module
    with pytest.raises(InputError, match='last'):
        build(cfg)


def test_labels_outside_class_range_are_one_clear_error():
    model = build(tiny_cfg())
    data = batch(num_classes=9)
    with pytest.raises(InputError, match='outside the class range 0..3'):
        grads_after_step(model, data)


def test_swapping_the_backbone_is_one_line_and_k_still_works():
    cfg = tiny_cfg(num_modules=4, cuts=None)
    cfg['split']['strategy'] = 'equal'
    cfg['backbone']['model_name'] = 'resnet26d'  # bottlenecks: 2048 channels at layer4
    model = build(cfg)
    assert model.num_units == 4 and model.decode_head.in_channels == 2048
    assert model.auxiliary_head.in_channels == 1024
    model.eval()
    x = model.data_preprocessor(batch(), False)['inputs']
    assert model(x, mode='tensor').shape == (2, 4, SIZE // 8, SIZE // 8)


def test_contsup_context_trains():  # its export is refused: tests/utils/test_stock_export.py
    model = build(tiny_cfg(num_modules=2, cuts=[(3, 0)], context=dict(type='ContSup', variant='R1')))
    g = grads_after_step(model, batch())
    assert any(n.startswith('context.') for n in g)


def test_a_graph_read_hierarchical_backbone_gives_the_levels_and_trains():
    """Twins (read from its fx graph: blocks get the grid size) under UPerNet: one level per stage,
    K=2, one local step, and the prediction at the decode head's stride."""
    cfg = tiny_cfg(num_modules=2, decode='uper')
    cfg['split']['strategy'] = 'equal'
    cfg['backbone'] = dict(model_name='twins_svt_small', pretrained=False, img_size=SIZE)
    model = build(cfg)
    assert model.num_units == 2 and model.decode_head.in_channels == [64, 128, 256, 512]
    assert [model.backbone.seq.infos[b].reduction for b in model.backbone.level_blocks] == [4, 8, 16, 32]
    assert grads_after_step(model, batch())
    model.eval()
    x = model.data_preprocessor(batch(), False)['inputs']
    assert model(x, mode='tensor').shape == (2, 4, SIZE // 4, SIZE // 4)
