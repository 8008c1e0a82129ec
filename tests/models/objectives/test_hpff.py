"""HPFF through the shared mechanism: the cascade through the live next module, patch feature
fusion, exact gradients with the per-module executor, and the settings it refuses."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from local_models import build, local_model_classes, tiny
from localvision.errors import InputError
from localvision.models.objectives.hpff import PatchFusion, grid_edges


def _ctx(model, name='LocalImageClassifier', seed=0):
    data = model.data_preprocessor(tiny(name).batch(seed=seed), True)
    return model.make_context(data['inputs'], data['data_samples'])


def _backward_unit(model, k, h, ctx):
    out, losses = model.forward_unit(k, h, ctx)
    sum(v for n, v in losses.items() if 'loss' in n).backward()
    return out


@pytest.mark.parametrize('name', sorted(local_model_classes()))
def test_every_task_model_trains_with_hpff(name):
    """Both terms default to the task's greedy objective; the cascade's aux nets run on patches."""
    model = build(name, 3, local_objective=dict(type='HPFF')).train()
    for obj in model.objectives:
        assert type(obj.base).__name__ == type(obj.independent).__name__ == model.greedy_objective['type']
        assert isinstance(obj.base.head, PatchFusion) and not isinstance(obj.independent.head, PatchFusion)
    live = {id(p) for p in model.backbone.parameters()}
    assert not live & {id(p) for o in model.objectives for p in o.parameters()}  # runs the live module, owns none
    losses = model.train_step(tiny(name).batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert {n.split('.')[1] for n in losses if n.startswith('m1.')} == {'independent', 'cascade'}


def test_the_cascade_runs_the_live_next_module_and_trains_modules_k_and_k_plus_1():
    torch.manual_seed(0)
    model = build('LocalImageClassifier', 4, local_objective=dict(type='HPFF', independent_weight=0)).train()
    bb = model.backbone
    assert model.objectives[0].independent is None  # the papers' ImageNet code: cascade only
    ctx = _ctx(model)
    model.zero_grad()
    out = _backward_unit(model, 0, ctx.inputs, ctx)
    grads = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in bb.module_parameters(k)) for k in range(4)]
    assert grads == [True, True, False, False]  # the pair (0, 1), nothing further
    # the cascade is module 1 itself: same output in eval mode
    model.eval()
    with torch.no_grad():
        ref = bb.forward_module(1, out.detach())
        torch.testing.assert_close(model.objectives[0]._later.forward_next(out.detach()), ref)
    # the last pair ends with the final norm, as the backbone does
    later = model.objectives[2]._later
    assert (later.first, later.stop) == (bb.module_ranges()[3].start, len(bb.seq))


@pytest.mark.parametrize('objective', [dict(type='HPFF'), dict(type='HPFF', base=dict(
    type='InfoPro', loss_mode='softmax', lambda_recon=(5, 0), lambda_task=(0.5, 0.5), head=dict(type='PoolLinearHead')))])
def test_per_module_backward_gives_the_gradients_of_one_joint_backward(objective):
    """Module k+1 gets gradients from unit k's cascade and from its own unit: the per-module executor
    (backward of unit k before unit k+1's forward) must end with the same step as one joint backward."""
    torch.manual_seed(0)
    ref = build('LocalImageClassifier', 3, local_objective=objective)
    models = {ex: copy.deepcopy(ref).train() for ex in ('PerModuleBackward', 'JointBackward')}
    for ex, model in models.items():
        from localvision.models.local_model import build_executor
        model.executor = build_executor(dict(type=ex))
        model.train_step(tiny('LocalImageClassifier').batch(),
                         OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    a, b = (dict(m.named_parameters()) for m in models.values())
    changed = 0
    for n, p in a.items():
        torch.testing.assert_close(p, b[n], rtol=1e-5, atol=1e-6, msg=n)
        changed += int(not torch.equal(p, dict(ref.named_parameters())[n]))
    assert changed > 0


def test_patch_fusion_averages_vectors_and_puts_maps_back_in_place():
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 4, 7, 6)
    fused = PatchFusion(head, 2)(x)
    rows, cols = grid_edges(7, 2), grid_edges(6, 2)
    assert rows == [0, 4, 7] and cols == [0, 3, 6]
    want = torch.stack([head(x[..., r0:r1, c0:c1]) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])])
    torch.testing.assert_close(fused, want.mean(0))
    # a map output (a 1x1 conv) is stitched back: equal to the conv on the whole map
    conv = nn.Conv2d(4, 5, 1)
    torch.testing.assert_close(PatchFusion(conv, 3)(x), conv(x))

    class Decoder(nn.Module):  # decodes each patch to its share of the target size
        def forward(self, x, size):
            return nn.functional.interpolate(x[:, :3], size=tuple(size), mode='nearest')
    out = PatchFusion(Decoder(), 2)(x, (28, 24))
    assert out.shape == (2, 3, 28, 24)
    # the top-left patch (rows 0-3, cols 0-2) fills rows 0-15 and cols 0-11 of the image
    torch.testing.assert_close(out[..., :16, :12], nn.functional.interpolate(x[:, :3, :4, :3], size=(16, 12)))
    # a map smaller than the grid is split into as many parts as it has rows / columns
    assert PatchFusion(conv, 4)(x[..., :2, :]).shape == (2, 5, 2, 6)


def test_hpff_on_vit_tokens():
    model = build('LocalImageClassifier', 3, **{
        'local_objective': dict(type='HPFF'), 'backbone.model_name': 'vit_tiny_patch16_224',
        'backbone.img_size': 32, 'backbone.patch_size': 8, 'backbone.depth': 6}).train()
    losses = model.train_step(tiny('LocalImageClassifier').batch(),
                              OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert torch.isfinite(losses['m0.cascade.loss_cls'])


def test_settings_hpff_cannot_work_with_are_refused():
    with pytest.raises(InputError, match='step_each_module / step_in_backward'):
        build('LocalImageClassifier', 3, local_objective=dict(type='HPFF'),
              executor=dict(type='PerModuleBackward', step_each_module=True))
    with pytest.raises(InputError, match=r'use model.context=None'):
        build('LocalImageClassifier', 3, local_objective=dict(type='HPFF'), context=dict(type='ContSup', variant='E'))
    with pytest.raises(InputError, match='base cannot be AugLocal'):
        build('LocalImageClassifier', 3, local_objective=dict(type='HPFF', base=dict(type='AugLocal')))
    with pytest.raises(InputError, match='patches=0'):
        build('LocalImageClassifier', 3, local_objective=dict(type='HPFF', patches=0))
    from localvision.engine.pipeline.config import objectives_training_next_module
    assert objectives_training_next_module(dict(type='HPFF')) == ['HPFF']  # module-parallel training refuses it
