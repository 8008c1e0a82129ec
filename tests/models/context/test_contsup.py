"""ContSup context supply: variants, shapes, gradient ownership, inference and checkpoints, ViTs."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from localvision.cls import LocalImageClassifier
from localvision.models.context import ContSup, add_to_features, build_context
from localvision.models.objectives import LocalContext
from mmpretrain.structures import DataSample

VIT = dict(model_name='vit_tiny_patch16_224', img_size=16, patch_size=4, depth=3, embed_dim=24, num_heads=2,
           dynamic_img_size=True)


def make_model(variant='R1E', k=3, n=None, backbone=None, objective=None, executor='PerModuleBackward', size=32):
    torch.manual_seed(0)
    context = dict(type='ContSup', variant=variant) if variant else None
    if n is not None:
        context['n'] = n
    return LocalImageClassifier(
        backbone=backbone or dict(model_name='cifar_resnet20'), head=dict(type='LinearClsHead', num_classes=4),
        split=dict(input_size=(3, size, size), num_modules=k, strategy='equal'),
        local_objective=objective or dict(type='Greedy', head=dict(type='PoolLinearHead')), context=context,
        executor=dict(type=executor),
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))


def make_batch(n=6, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


def unit_losses_and_inputs(model, batch):
    """Run the units in order as the executor does; keep each unit's loss."""
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    h, out = ctx.inputs, []
    for k in range(model.num_units):
        feat, losses = model.forward_unit(k, h, ctx)
        out.append(sum(losses.values()))
        h = feat.detach()
    return out


def test_variants_build_the_published_projections():
    ins, outs = [3, 16, 32, 64], [16, 32, 64, 64]
    e = build_context(dict(type='ContSup', variant='E'), ins, outs)
    assert all(c.encoder is not None and len(c.skips) == 0 for c in e.cuts) and len(e.cuts) == 3
    r1 = build_context(dict(type='ContSup', variant='R1'), ins, outs)
    assert [c.skips[0].conv.in_channels for c in r1.cuts] == [3, 16, 32]  # input of the finished module
    assert [c.skips[0].conv.out_channels for c in r1.cuts] == [16, 32, 64]
    rn = build_context(dict(type='ContSup', variant='Rn', n=2), ins, outs)
    assert [[s.conv.in_channels for s in c.skips] for c in rn.cuts] == [[3], [16, 3], [32, 16]]
    r1e = build_context(dict(type='ContSup', variant='R1E'), ins, outs)
    assert all(c.encoder is not None and len(c.skips) == 1 for c in r1e.cuts)
    # as in the paper's code: the first cut's context is the encoded image only (no R projection of the image)
    assert isinstance(r1e.cuts[0].skips[0], torch.nn.Identity)
    assert [c.skips[0].conv.in_channels for c in r1e.cuts[1:]] == [16, 32]
    twice = build_context(dict(type='ContSup', variant='R1E', project_image=True), ins, outs)
    assert twice.cuts[0].skips[0].conv.in_channels == 3
    enc = r1e.cuts[1].encoder  # the paper's encoder: 12 hidden channels, full resolution
    assert (enc.conv1.in_channels, enc.conv1.out_channels, enc.conv2.out_channels) == (3, 12, 32)
    assert enc.conv1.stride == enc.conv2.stride == (1, 1)
    wide = build_context(dict(type='ContSup', variant='E', encoder_hidden=None), ins, outs)
    assert [c.encoder.conv1.out_channels for c in wide.cuts] == [16, 32, 64]
    assert build_context(None, ins, outs) is None
    strided = build_context(dict(type='ContSup', variant='E', strided_encoder=True), ins, outs, reductions=[1, 2, 4, 4])
    assert [(c.encoder.conv1.stride[0], c.encoder.conv2.stride[0]) for c in strided.cuts] == [(1, 1), (2, 1), (2, 2)]
    full = build_context(dict(type='ContSup', variant='E'), ins, outs, reductions=[1, 2, 4, 4])
    assert all(c.encoder.conv1.stride == c.encoder.conv2.stride == (1, 1) for c in full.cuts)
    # He fan-out initialisation, as the paper's code gives every conv
    w = full.cuts[2].encoder.conv2.weight
    assert abs(w.std().item() - (2 / (9 * 64)) ** 0.5) < 0.2 * (2 / (9 * 64)) ** 0.5
    x = torch.randn(2, 3, 32, 32)
    assert strided.cuts[2].encoder(x, (8, 8)).shape == full.cuts[2].encoder(x, (8, 8)).shape == (2, 64, 8, 8)


def test_unknown_type_variant_and_n_fail_at_build_time():
    with pytest.raises(ValueError, match=r"model.context.type='ContSupp' is not a registered context supply; "
                                         r"allowed: \['ContSup'\]"):
        make_model().__class__(backbone=dict(model_name='cifar_resnet20'), head=dict(type='LinearClsHead', num_classes=4),
                               split=dict(input_size=(3, 32, 32), num_modules=2, strategy='equal'),
                               local_objective=dict(type='Greedy'), context=dict(type='ContSupp'))
    with pytest.raises(ValueError, match=r"model.context.variant='R2E' is unknown; allowed: \['E', 'R1', 'Rn'"):
        make_model(variant='R2E')
    with pytest.raises(ValueError, match=r"variant='Rn' needs model.context.n"):
        make_model(variant='Rn')
    with pytest.raises(ValueError, match=r"model.context.n=3 is only used by the variants 'Rn' and 'RnE'"):
        make_model(variant='R1', n=3)


@pytest.mark.parametrize('variant,n', [('E', None), ('R1', None), ('Rn', 2), ('R1E', None)])
def test_context_projections_get_gradients_only_from_the_next_modules_loss(variant, n):
    model = make_model(variant, k=4, n=n)
    losses = unit_losses_and_inputs(model, make_batch())
    params = dict(model.named_parameters())
    names = {id(p): name for name, p in params.items()}
    for j, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True, retain_graph=True)
        touched = {name for name, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
        own = {names[id(p)] for p in model.unit_parameters(j)}
        assert touched <= own, f'unit {j} loss reaches {sorted(touched - own)}'
        ctx_params = {names[id(p)] for p in model.context.parameters_of_module(j)}
        assert bool(ctx_params) == (j > 0)
        assert ctx_params <= own
        # every context projection of the cut before module j is trained by module j's loss
        assert {n.rsplit('.', 1)[0] for n in ctx_params if n.endswith('weight') and '.conv' in n} <= \
            {n.rsplit('.', 1)[0] for n in touched}
    ids = [id(p) for k in range(model.num_units) for p in model.unit_parameters(k)]
    assert len(ids) == len(set(ids)) == len(params)  # the units partition the parameters


def test_per_module_backward_equals_joint_backward_with_context():
    batch = make_batch()
    grads = []
    for ex in ('PerModuleBackward', 'JointBackward'):
        model = make_model('R1E', k=3, executor=ex)
        ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
        model.train_step(copy.deepcopy(batch), ow)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(n.startswith('context.') for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)


def test_inference_uses_the_context_path_and_checkpoints_keep_it():
    model = make_model('R1E', k=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, mode='tensor')
        plain = model.head((model.backbone.model(x),))  # the same network without the context path
    assert not torch.allclose(out, plain)
    state = model.state_dict()
    assert any(k.startswith('context.cuts.1.encoder.') for k in state)
    assert any(k.startswith('context.cuts.1.skips.0.') for k in state)
    other = make_model('R1E', k=3).eval()
    with torch.no_grad():
        for p in other.context.parameters():
            p.add_(1.0)
        assert not torch.allclose(other(x, mode='tensor'), out)
        other.load_state_dict(state)
        torch.testing.assert_close(other(x, mode='tensor'), out)
        pred = other.predict(x)
    torch.testing.assert_close(torch.stack([d.pred_score for d in pred]), out.softmax(1))


def test_context_is_added_to_patch_tokens_only():
    h = torch.randn(2, 1 + 6, 5)
    add = torch.randn(2, 5, 2, 3)
    out = add_to_features(h, add)
    torch.testing.assert_close(out[:, :1], h[:, :1])
    torch.testing.assert_close(out[:, 1:], h[:, 1:] + add.flatten(2).transpose(1, 2))


def test_vit_trains_with_context_and_keeps_prefix_tokens():
    model = make_model('R1E', k=3, backbone=VIT, size=16)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(make_batch(4, size=16), ow)
    assert {'m0.loss_cls', 'm1.loss_cls', 'loss_cls'} <= set(log)
    ctx = LocalContext(inputs=torch.randn(2, 3, 16, 16), img_hw=(16, 16))
    h0 = model.backbone.forward_module(0, model.module_input(0, ctx.inputs, ctx))
    h1 = model.module_input(1, h0.detach(), ctx)
    assert h1.shape == h0.shape
    torch.testing.assert_close(h1[:, :1], h0[:, :1])  # class token untouched
    assert not torch.allclose(h1[:, 1:], h0[:, 1:])
    model.eval()
    assert model(torch.randn(1, 3, 24, 16), mode='tensor').shape == (1, 4)  # dynamic image size


def test_modules_must_run_in_order():
    ctx_model = ContSup([3, 8, 8], [8, 8, 8], variant='R1')
    ctx = LocalContext(inputs=torch.randn(1, 3, 8, 8), img_hw=(8, 8))
    with pytest.raises(RuntimeError, match='the input of module 1 was not seen'):
        ctx_model(2, torch.randn(1, 8, 8, 8), ctx, lambda x, hw: x)
