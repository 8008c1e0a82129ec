"""What must hold for every local task model found in the registries (not a hand-written list).

For each class: K=1 trains exactly like the stock library's end-to-end loss; no gradient crosses
a cut (each unit's loss reaches only that unit's parameters, which partition the model's);
``tools/train.py`` under a launcher wraps it in the local data-parallel wrapper; the per-module
stepping executors, ``frozen_stages`` / ``norm_eval`` and the ContSup context work. The 2-process
data-parallel check is in ``tests/engine/test_distributed_tasks.py``.
"""
import copy
import os
import os.path as osp

import pytest
import torch
import torch.distributed as dist
from mmengine.optim import OptimWrapper

from local_models import build, free_port, local_model_classes, task_model_params, tiny
from localvision.structures import LocalContext

NAMES = sorted(local_model_classes())


class KeepGrads(OptimWrapper):
    """Steps with lr 0 and keeps the gradients for inspection."""

    def zero_grad(self, **kwargs) -> None:
        pass


def test_every_local_model_has_a_tiny_instance():
    assert {'LocalImageClassifier', 'LocalEncoderDecoder', 'LocalSingleStageDetector',
            'LocalTwoStageDetector'} <= set(NAMES)
    for name in NAMES:
        tiny(name)  # a new task model needs an entry in tests/local_models.py


@pytest.mark.parametrize('name', NAMES)
def test_k1_trains_like_the_stock_end_to_end_loss(name):
    model = build(name, 1)
    model.train()
    data = tiny(name).batch(2)
    ow = KeepGrads(torch.optim.SGD(model.parameters(), lr=0.0))
    torch.manual_seed(1)
    model.train_step(copy.deepcopy(data), ow)
    local = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss, _ = model.parse_losses(tiny(name).reference(model, copy.deepcopy(data)))
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert set(local) == set(plain) and len(local) > 0
    for n in plain:
        torch.testing.assert_close(local[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('context', [None, dict(type='ContSup', variant='R1E')], ids=['plain', 'contsup'])
@pytest.mark.parametrize('name', NAMES)
def test_no_gradient_crosses_a_cut(name, context):
    model = build(name, 3, context=context)
    model.train()
    units = [{id(p) for p in model.unit_parameters(k) if p.requires_grad} for k in range(model.num_units)]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set.union(*units) == trainable and sum(map(len, units)) == len(trainable)  # a partition
    if context is not None:
        assert {id(p) for p in model.context.parameters()} <= units[1] | units[2]
    data = model.data_preprocessor(copy.deepcopy(tiny(name).batch(2)), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    h = ctx.inputs
    for k in range(model.num_units):
        model.zero_grad(set_to_none=True)
        out, losses = model.forward_unit(k, h, ctx)
        loss, _ = model.parse_losses(losses)
        loss.backward()
        got = {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert got and got <= units[k], f'unit {k}: gradients outside the unit'
        assert {id(p) for p in model.backbone.module_parameters(k)} & got, f'module {k} was not trained'
        h = out.detach()


@pytest.mark.parametrize('context', [None, dict(type='ContSup', variant='R1E')], ids=['plain', 'contsup'])
@pytest.mark.parametrize('name', task_model_params())
def test_per_module_and_joint_backward_give_the_same_gradients(name, context):
    """The per-module loop (each module's backward before the next forward) computes the gradients
    of ``JointBackward`` (one backward of the summed losses), for every task model in the registries."""
    data = tiny(name).batch(2)
    grads = []
    for executor in ('PerModuleBackward', 'JointBackward'):
        model = build(name, 3, context=context, executor=dict(type=executor))
        model.train()
        ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)  # no step
        torch.manual_seed(1)  # the same random draws (a two-stage detector's samplers)
        model.train_step(copy.deepcopy(data), ow)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('name', NAMES)
def test_inference_runs_the_context_path(name):
    model = build(name, 2, context=dict(type='ContSup', variant='R1'))
    model.eval()
    data = model.data_preprocessor(copy.deepcopy(tiny(name).batch(2)), False)
    with torch.no_grad():
        base = model.extract_levels(data['inputs'])[0]
        for p in model.context.parameters():
            p.add_(0.5)
        moved = model.extract_levels(data['inputs'])[0]
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    assert not torch.allclose(base, moved) and len(preds) == 2


def _params_after_step(model, data, executor: dict):
    model.executor = type(model.executor)(**executor) if executor else model.executor
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    torch.manual_seed(1)
    model.train_step(copy.deepcopy(data), ow)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize('flag', ['step_each_module', 'step_in_backward'])
@pytest.mark.parametrize('name', NAMES)
def test_per_module_stepping_equals_one_step(name, flag):
    data = tiny(name).batch(2)
    ref = _params_after_step(build(name, 3), data, {})
    got = _params_after_step(build(name, 3), data, {flag: True})
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('name', NAMES)
def test_frozen_stages_and_norm_eval(name):
    model = build(name, 2, **{'backbone.frozen_stages': 1, 'backbone.norm_eval': True})
    model.train()
    frozen = [p for info in model.backbone.seq.infos if info.stage <= 1 for p in info.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    before = [p.detach().clone() for p in frozen]
    stats = [m.running_mean.clone() for m in bns]
    ow = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    model.train_step(copy.deepcopy(tiny(name).batch(2)), ow)
    assert all(torch.equal(a, p) for a, p in zip(before, frozen))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns))


@pytest.mark.parametrize('name', NAMES)
def test_train_py_under_a_launcher_uses_the_local_wrapper(name, tmp_path):
    from mmengine.registry import MODEL_WRAPPERS

    from localvision.utils.config import load_config
    cfg_file = tmp_path / 'tiny.py'
    imports = {'mmseg': ['localvision.seg'], 'mmdet': ['localvision.det']}.get(tiny(name).scope, [])
    cfg_file.write_text(f'default_scope = {tiny(name).scope!r}\ncustom_imports = dict(imports={imports!r})\n'
                        f'model = {tiny(name).cfg(2)!r}\nenv_cfg = dict(dist_cfg=dict(backend="auto"))\n')
    cfg = load_config(str(cfg_file), launcher='pytorch')
    assert cfg.model_wrapper_cfg.type == 'LocalDistributedDataParallel'
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        wrapped = MODEL_WRAPPERS.build(dict(cfg.model_wrapper_cfg, module=build(name, 2)))
        wrapped.module.train()
        ow = OptimWrapper(torch.optim.SGD(wrapped.module.parameters(), lr=0.01))
        log = wrapped.train_step(copy.deepcopy(tiny(name).batch(2)), ow)
        assert any(k.startswith('m0.') for k in log) and torch.isfinite(log['loss'])
    finally:
        dist.destroy_process_group()


def test_local_context_lives_below_the_engine():
    """The execution layer depends on the units contract only (no import of localvision.models)."""
    import ast
    root = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'localvision', 'engine')
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith('.py'):
                tree = ast.parse(open(osp.join(dirpath, f)).read())
                for node in ast.walk(tree):
                    mod = node.module if isinstance(node, ast.ImportFrom) else None
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    for m in [mod or ''] + names:
                        assert not m.startswith('localvision.models'), f'{f} imports {m}'
    assert LocalContext.__module__ == 'localvision.structures.local_context'


@pytest.mark.parametrize('name', NAMES)
def test_backbone_keys_that_would_mislead_are_refused(name):
    from localvision.errors import InputError
    with pytest.raises(InputError, match=r'out_indices is not used by StagedTimm.*out_stages=\(1, 2, 3, 4\)'):
        build(name, 2, **{'backbone.out_indices': (0, 1, 2, 3)})
    with pytest.raises(InputError, match=r"backbone.type='ResNetV1c' cannot be split.*_delete_=True"):
        build(name, 2, **{'backbone.type': 'ResNetV1c'})


def test_a_channels_last_cut_state_trains_through_group_norm():
    """torch's CPU ``group_norm`` backward crashes on a channels-last input that needs no gradient,
    which a detached cut state is (oneDNN convolutions return channels-last maps; MetaFormer v2
    blocks open with a GroupNorm): module 1 gets a state it can run its backward on."""
    from localvision.cls import LocalImageClassifier
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = LocalImageClassifier(
        backbone=dict(model_name='poolformerv2_s12'), head=dict(type='LinearClsHead', num_classes=3),
        split=dict(cuts=[(3, 2)], input_size=(3, 64, 64)), local_objective=dict(type='Greedy'),
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))
    batch = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    losses = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert all(torch.isfinite(v).all() for v in losses.values())


def _generic_objectives():
    """The task-independent local objectives (``localvision.models.objectives``), from the registry."""
    import localvision.models  # noqa: F401  (fills the registry)
    from localvision.registry import OBJECTIVES
    return sorted(n for n, c in OBJECTIVES.module_dict.items()
                  if c.__module__.startswith('localvision.models.objectives'))


def _step_and_params(model, data):
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    torch.manual_seed(1)
    losses = model.train_step(copy.deepcopy(data), ow)
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_channels_last(name, k, **overrides):
    data = tiny(name).batch(2)
    ref_losses, ref = _step_and_params(build(name, k, **overrides), data)
    model = build(name, k, **overrides, **{'backbone.channels_last': True})
    parts = [model.backbone, model.objectives] + ([model.context] if model.context is not None else [])
    four_d = {n for part in parts for n, p in part.named_parameters(prefix=_prefix(model, part)) if p.dim() == 4}
    assert four_d and all(dict(model.named_parameters())[n].is_contiguous(memory_format=torch.channels_last)
                          for n in four_d)
    # the task's heads stay contiguous (mmcv's CPU ops such as RoIAlign read NCHW memory)
    assert all(p.is_contiguous() for n, p in model.named_parameters() if n not in four_d)
    losses, got = _step_and_params(model, data)
    assert set(losses) == set(ref_losses)
    for key in (k for k in ref_losses if 'loss' in k):  # not accuracies: an argmax may flip on rounding
        torch.testing.assert_close(losses[key], ref_losses[key], rtol=1e-4, atol=1e-5, msg=key)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-5, msg=n)
    # the step kept the memory format (the optimizer updates in place)
    assert all(dict(model.named_parameters())[n].is_contiguous(memory_format=torch.channels_last) for n in four_d)


def _prefix(model, part) -> str:
    return next(n for n, m in model.named_modules() if m is part)


@pytest.mark.parametrize('name', NAMES)
def test_channels_last_trains_like_contiguous(name):
    """``model.backbone.channels_last=True`` converts the backbone and the local-learning nets
    and trains like the contiguous model (same initial weights, same step up to rounding)."""
    _check_channels_last(name, 3)


@pytest.mark.parametrize('objective', _generic_objectives())
def test_channels_last_every_objective(objective):
    """Every task-independent objective (and the ContSup context) under channels-last: no view of
    a channels-last map breaks, and the step equals the contiguous one."""
    obj = dict(type='MAN', momentum=0.0) if objective == 'MAN' else dict(type=objective)
    _check_channels_last('LocalImageClassifier', 3, local_objective=obj,
                         context=None if takes_no_context(objective) else dict(type='ContSup', variant='R1E'))


def takes_no_context(objective: str) -> bool:
    from localvision.registry import OBJECTIVES
    return bool(getattr(OBJECTIVES.get(objective), 'trains_next_module', False))


@pytest.mark.parametrize('name', NAMES)
def test_the_split_is_logged_and_an_unasked_k1_warned(name, monkeypatch):
    import logging

    import mmengine.logging
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, logger=None, level=logging.INFO: logged.append((level, msg)))
    build(name, 2)
    assert any(level == logging.INFO and msg.startswith('split: K=2 modules, cut after ') for level, msg in logged)
    logged.clear()
    build(name, 2, **{'backbone.grad_checkpointing': True, 'split.strategy': 'balanced'})
    assert any(msg.startswith('checkpointing ') and ' blocks' in msg for _, msg in logged)
    logged.clear()
    split = {k: v for k, v in tiny(name).cfg(2)['split'].items() if k not in ('num_modules', 'cuts')}
    model = build(name, 2, split=split)  # no K asked for, a local objective configured
    assert model.backbone.num_modules == 1
    assert [msg for level, msg in logged if level == logging.WARNING] == [
        'model.split names neither cuts nor num_modules: K=1, the backbone trains end to end and '
        'model.local_objective is not used; set model.split.num_modules=K']


@pytest.mark.parametrize('name', NAMES)
def test_the_balanced_split_does_not_depend_on_the_seed(name):
    """What the dry run keeps can depend on the values it computes (a two-stage detector's mask head
    runs on the proposals that match a box), so it draws from a fixed seed: runs of the same config
    with different seeds get the same profile and cuts, and the profiling leaves each run's weights
    as its seed drew them (equal to a build with those cuts given explicitly)."""
    balanced = dict(num_modules=3, strategy='balanced', input_size=(3, 64, 64))
    models = [build(name, 3, seed=s, split=dict(balanced)) for s in (0, 3, 4)]  # 3, 4 moved the detector's
    profiles = [m.backbone.split_profile for m in models]
    assert profiles[1] == profiles[0] and profiles[2] == profiles[0]
    assert models[1].backbone.cuts == models[0].backbone.cuts == models[2].backbone.cuts
    given = build(name, 3, seed=3, split=dict(cuts=list(models[1].backbone.cuts), input_size=(3, 64, 64)))
    drawn, explicit = models[1].state_dict(), given.state_dict()
    assert drawn.keys() == explicit.keys()
    for key in drawn:
        torch.testing.assert_close(drawn[key], explicit[key], rtol=0, atol=0, msg=key)
