"""Objectives built on the backbone's later blocks (AugLocal, MAN), through the shared mechanism:
every registered task model, ConvNets and ViTs, the papers' sampling and EMA rules."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from local_models import build, local_model_classes, tiny
from localvision.errors import InputError
from localvision.models.objectives.auglocal import pyramid_depth, sampled_blocks


def test_auglocal_samples_the_papers_layers():
    """AugLocal's code (ResNet-32: 16 layers, stem = layer 0): d=3 at layer 0 -> [5, 10, 15];
    every later layer when d >= L-1-l."""
    assert sampled_blocks(0, 15, 3) == [5, 10, 15]
    assert sampled_blocks(12, 15, 3) == [13, 14, 15]
    assert sampled_blocks(12, 15, 2) == [14, 15]  # round(13.5) = 14, as Python rounds in the papers' code
    assert sampled_blocks(3, 15, 1) == [15]
    # pyramidal depth, tau=0.5: ResNet-32 d=3 over 12 local modules -> [3]*6 + [2]*6; d=5 over 10
    assert [pyramid_depth(3, 0.5, k, 13) for k in range(12)] == [3] * 6 + [2] * 6
    assert [pyramid_depth(5, 0.5, k, 11) for k in range(10)] == [5, 5, 5, 4, 4, 4, 4, 3, 3, 3]
    assert [pyramid_depth(2, 0.0, k, 5) for k in range(4)] == [2] * 4


def _step(model, batch) -> dict:
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    return model.train_step(batch, ow)


@pytest.mark.parametrize('name', sorted(local_model_classes()))
@pytest.mark.parametrize('objective', ['AugLocal', 'MAN'])
def test_every_task_model_trains_with_objectives_on_later_blocks(name, objective):
    """Each task's greedy objective is the default base; the copies are the objective's own."""
    model = build(name, 3, local_objective=dict(type=objective)).train()
    live = {id(p) for p in model.backbone.parameters()}
    for obj in model.objectives:
        assert type(obj.base).__name__ == model.greedy_objective['type']
        assert not live & {id(p) for p in obj.parameters()}  # copies, never the live blocks
    losses = _step(model, tiny(name).batch())
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert any(k.startswith('m1.') for k in losses)


def test_auglocal_aux_net_is_the_sampled_blocks_and_trains_nothing_after_the_cut():
    torch.manual_seed(0)
    model = build('LocalImageClassifier', 4, **{'local_objective': dict(type='AugLocal', depth=3, pyramid=0.5),
                                                'backbone.model_name': 'cifar_resnet32'}).train()
    seq = model.backbone.seq
    obj0 = model.objectives[0]
    cut = model.backbone.module_ranges()[0][-1]
    assert obj0.indices == sampled_blocks(cut, len(seq) - 1, 3)
    assert obj0.depth == 3 and model.objectives[2].depth == 2  # pyramidal: 3 -> (1 - 0.5) * 3 + 0.5
    # a width / stride change between the sampled blocks is bridged by an adapter, else none
    kinds = [type(a).__name__ for a in obj0.adapters]
    stride_changes = [seq.infos[i - 1].reduction != (seq.infos[j].reduction if n else seq.infos[cut].reduction)
                      for n, (i, j) in enumerate(zip(obj0.indices, [cut] + obj0.indices[:-1]))]
    assert kinds == ['_Adapter' if c else 'Identity' for c in stride_changes]
    # module 0's local loss reaches module 0 and its aux net only
    model.zero_grad()
    data = model.data_preprocessor(tiny('LocalImageClassifier').batch(), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    out, losses = model.forward_unit(0, ctx.inputs, ctx)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    later = [p for k in range(1, 4) for p in model.backbone.module_parameters(k)]
    assert all(p.grad is None for p in later)
    assert all(p.grad is not None for p in obj0.copies.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.module_parameters(0))


def test_man_ema_follows_the_next_modules_first_block():
    torch.manual_seed(0)
    model = build('LocalImageClassifier', 3, local_objective=dict(type='MAN', momentum=0.9)).train()
    obj0 = model.objectives[0]
    first = model.backbone.module_ranges()[1].start
    live = [p for m in model.backbone.seq.infos[first].modules for p in m.parameters()]
    ema = [p for p in obj0.ema.parameters()]
    assert obj0.block == first and len(ema) == len(live)
    assert all(torch.equal(e, p) for e, p in zip(ema, live))  # starts equal to the live block
    assert not any(p.requires_grad for p in ema)
    lb = list(obj0.lb.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(lb, live))  # the learnable copy is re-initialised
    before = [p.detach().clone() for p in ema]
    _step(model, tiny('LocalImageClassifier').batch())  # the live block moves
    live_after = [p.detach().clone() for p in live]
    _step(model, tiny('LocalImageClassifier').batch(seed=1))  # its start: ema <- 0.9 ema + 0.1 live
    for e, b, p in zip(ema, before, live_after):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p, rtol=1e-5, atol=1e-6)
    # no gradient reaches the live next module from module 0's loss
    model.zero_grad()
    data = model.data_preprocessor(tiny('LocalImageClassifier').batch(), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    _, losses = model.forward_unit(0, ctx.inputs, ctx)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is None for p in live) and all(p.grad is None for p in ema)
    assert all(p.grad is not None for p in lb)


def test_man_on_infopro_and_learnable_scale():
    model = build('LocalImageClassifier', 3, local_objective=dict(
        type='MAN', learnable_scale=True, base=dict(type='InfoPro', lambda_recon=1.0, lambda_task=1.0,
                                                    head=dict(type='PoolLinearHead')))).train()
    losses = _step(model, tiny('LocalImageClassifier').batch())
    assert {'m0.loss_recon', 'm0.loss_cls'} <= set(losses)
    assert float(model.objectives[0].scale) != 1.0  # MAN++'s s is trained


@pytest.mark.parametrize('objective', ['AugLocal', 'MAN'])
def test_vit_tokens_reach_later_blocks_as_tokens(objective):
    """A ViT hands on tokens (class token included); the copied blocks run on them, the base head
    gets the patch grid as a map."""
    model = build('LocalImageClassifier', 3, **{
        'local_objective': dict(type=objective, depth=2) if objective == 'AugLocal' else dict(type=objective),
        'backbone.model_name': 'vit_tiny_patch16_224', 'backbone.img_size': 32, 'backbone.patch_size': 8,
        'backbone.depth': 6}).train()
    assert all(isinstance(a, torch.nn.Identity) for o in model.objectives for a in getattr(o, 'adapters', []))
    losses = _step(model, tiny('LocalImageClassifier').batch())
    assert torch.isfinite(losses['m0.loss_cls'])


def test_a_model_copy_runs_its_own_copied_blocks():
    """A deep copy of the model (the pipeline traces one) runs the copy's blocks, not the original's."""
    model = build('LocalImageClassifier', 3, local_objective=dict(type='AugLocal', depth=2))
    twin = copy.deepcopy(model)
    called = []
    for m in twin.objectives[0].copies.modules():
        m.register_forward_hook(lambda *a: called.append(1))
    data = twin.data_preprocessor(tiny('LocalImageClassifier').batch(), True)
    ctx = twin.make_context(data['inputs'], data['data_samples'])
    twin.forward_unit(0, ctx.inputs, ctx)
    assert called


def test_auglocal_refuses_bridging_maps_it_cannot():
    """An NHWC hierarchical backbone (Swin) across a stage transition: one clear line at build."""
    with pytest.raises(InputError, match=r'AugLocal: .*needs a width / stride adapter, which works on NCHW maps'):
        build('LocalImageClassifier', 2, **{
            'local_objective': dict(type='AugLocal', depth=1),
            'backbone.model_name': 'swin_tiny_patch4_window7_224', 'backbone.img_size': 32,
            'backbone.window_size': 2, 'backbone.embed_dim': 16, 'backbone.depths': (1, 1, 1, 1),
            'backbone.num_heads': (1, 1, 1, 1), 'split.strategy': 'balanced'})
