"""The per-module executor: same gradients as joint training, isolation at cuts, one step per
iteration with accumulation counted right, and a lower peak of live tensors."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper

from localvision.cls import LocalImageClassifier
from localvision.cls.export import export_state_dict
from mmpretrain.structures import DataSample


def make_model(k=1, executor='PerModuleBackward', objective=None, cuts=None):
    torch.manual_seed(0)
    split = dict(input_size=(3, 32, 32))
    split.update(dict(cuts=cuts) if cuts else dict(num_modules=k, strategy='equal'))
    return LocalImageClassifier(
        backbone=dict(model_name='cifar_resnet20'), head=dict(type='LinearClsHead', num_classes=4), split=split,
        local_objective=objective or dict(type='Greedy', head=dict(type='PoolLinearHead')),
        executor=dict(type=executor) if isinstance(executor, str) else executor,
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))


def make_batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(n)]
    samples = [DataSample().set_gt_label(i % 4) for i in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def grads_after_one_iteration(model, batch, accumulative_counts=2):
    """Run one train_step without stepping (accumulation 2) and return the gradients."""
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=accumulative_counts)
    model.train_step(copy.deepcopy(batch), ow)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, ow


def test_k1_gradients_equal_the_plain_timm_model():
    model = make_model(k=1)
    plain = timm.create_model('cifar_resnet20', num_classes=4)
    plain.load_state_dict(export_state_dict(model))  # the same network in stock timm
    batch = make_batch()
    grads, _ = grads_after_one_iteration(model, batch)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    # accumulative_counts=2 scales the loss by 1/2
    (F.cross_entropy(plain(data['inputs']), labels) / 2).backward()
    assert len(grads) == len(list(plain.parameters()))
    for n, p in plain.named_parameters():
        ours = grads[f'head.{n}'] if n.startswith('fc.') else grads[f'backbone.model.{n}']
        torch.testing.assert_close(ours, p.grad, rtol=1e-5, atol=1e-6)


def test_per_module_and_joint_backward_give_the_same_gradients():
    batch = make_batch()
    g1, _ = grads_after_one_iteration(make_model(k=4), batch)
    g2, _ = grads_after_one_iteration(make_model(k=4, executor='JointBackward'), batch)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-5, atol=1e-7)


def test_no_gradient_crosses_a_cut():
    batch = make_batch()
    model = make_model(k=3)
    other = copy.deepcopy(model)
    # change everything downstream of module 0: later backbone modules, their objective, head
    with torch.no_grad():
        for p in other.unit_parameters(1) + other.unit_parameters(2):
            p.mul_(-1.7).add_(0.3)
    g_a, _ = grads_after_one_iteration(model, batch)
    g_b, _ = grads_after_one_iteration(other, batch)
    names = {id(p): n for n, p in model.named_parameters()}
    m0 = [names[id(p)] for p in model.unit_parameters(0)]
    later = [names[id(p)] for p in model.unit_parameters(1)]
    for n in m0:
        torch.testing.assert_close(g_a[n], g_b[n], rtol=0, atol=0)
    assert any(not torch.equal(g_a[n], g_b[n]) for n in later)  # the check can fail


def test_one_step_per_iteration_with_accumulation():
    model = make_model(k=4)
    batch = make_batch()
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = model.train_step(copy.deepcopy(batch), ow)
    assert ow.inner_count == 1
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # no step yet
    assert {'m0.loss_cls', 'm1.loss_cls', 'm2.loss_cls', 'loss_cls', 'loss'} <= set(log)
    torch.testing.assert_close(log['loss'], log['m0.loss_cls'] + log['m1.loss_cls'] + log['m2.loss_cls']
                               + log['loss_cls'])
    model.train_step(copy.deepcopy(batch), ow)
    assert ow.inner_count == 2
    assert all(p.grad is None for p in model.parameters())  # stepped, then zeroed (set to None)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_gradient_clipping_applies_to_all_modules():
    model = make_model(k=3)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0), clip_grad=dict(max_norm=1e-3))
    grads = {}
    hook = lambda p: grads.__setitem__(id(p), p.grad.clone())  # noqa: E731
    # record the (clipped) grads right before the optimizer step
    orig_step = ow.optimizer.step

    def step(*a, **k):
        for p in model.parameters():
            if p.grad is not None:
                hook(p)
        return orig_step(*a, **k)
    ow.optimizer.step = step
    model.train_step(make_batch(), ow)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
    assert total <= 1e-3 * 1.001
    assert len(grads) == len([p for p in model.parameters()])


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
def test_step_each_module_equals_one_step_at_the_end(optimizer):
    def make_opt(model):
        if optimizer == 'sgd':
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)

    models, live_grads = [], {}
    for each in (False, True, 'in_backward'):
        model = make_model(k=4, executor=dict(type='PerModuleBackward', step_each_module=each is True,
                                              step_in_backward=each == 'in_backward'))
        forward_unit = model.forward_unit

        def spy(k, h, ctx, model=model, forward_unit=forward_unit, each=each):
            # parameters holding a gradient when unit k starts
            live_grads[(each, k)] = sum(p.grad is not None for p in model.parameters())
            return forward_unit(k, h, ctx)
        model.forward_unit = spy
        ow = OptimWrapper(make_opt(model))
        for seed in range(3):
            model.train_step(copy.deepcopy(make_batch(seed=seed)), ow)
        assert all(p.grad is None for p in model.parameters())
        assert ow.inner_count == 3
        models.append(model)
    for other in models[1:]:
        for (n, a), b in zip(models[0].named_parameters(), other.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    # without: units 0..2's gradients are alive when unit 3 runs; with: none
    assert live_grads[(False, 3)] == sum(len(models[0].unit_parameters(k)) for k in range(3))
    assert all(live_grads[(True, k)] == 0 and live_grads[('in_backward', k)] == 0 for k in range(4))


def test_step_in_backward_keeps_almost_no_gradient_alive():
    from localvision.utils.memory import measure_peak_memory
    peaks = {}
    for mode in ('each', 'in_backward'):
        model = make_model(k=2, executor=dict(type='PerModuleBackward', step_each_module=mode == 'each',
                                              step_in_backward=mode == 'in_backward'))
        ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        batch = make_batch()
        model.train_step(copy.deepcopy(batch), ow)
        peaks[mode] = measure_peak_memory(lambda: model.train_step(copy.deepcopy(batch), ow), device='cpu',
                                          baseline=(model, ow.optimizer))
    assert peaks['in_backward'] < peaks['each']
    with pytest.raises(ValueError, match='step_in_backward=True cannot clip gradients'):
        model.train_step(make_batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                                                    clip_grad=dict(max_norm=1.0)))


def test_step_each_module_rejects_accumulation():
    model = make_model(k=2, executor=dict(type='PerModuleBackward', step_each_module=True))
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    with pytest.raises(ValueError, match='step_each_module=True needs a plain OptimWrapper without gradient '
                                         'accumulation'):
        model.train_step(make_batch(), ow)


def test_unknown_executor_and_objective_fail_at_build_time():
    with pytest.raises(ValueError, match=r"model.executor.type='Fast' is unknown; allowed: \['JointBackward', "):
        make_model(k=2, executor='Fast')
    with pytest.raises(ValueError, match=r"model.local_objective.type='InfoProo' is not a registered local "
                                         r"objective; allowed: \[.*'Greedy'"):
        make_model(k=2, objective=dict(type='InfoProo'))
    with pytest.raises(ValueError, match=r'lists 1 objectives but the split has 2 local modules'):
        make_model(k=3, objective=[dict(type='Greedy')])


@pytest.mark.gpu
def test_amp_per_module_backward_matches_joint_on_cuda():
    """AMP loss scaling through AmpOptimWrapper (needs CUDA: mmengine's AmpOptimWrapper refuses CPU)."""
    from mmengine.optim import AmpOptimWrapper
    batch = make_batch()
    grads = []
    for executor in ('PerModuleBackward', 'JointBackward'):
        model = make_model(k=3, executor=executor).cuda()
        ow = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_scale=1024.0,
                             accumulative_counts=2)
        model.train_step(copy.deepcopy(batch), ow)
        assert ow.inner_count == 1
        grads.append({n: p.grad.float() / 1024.0 for n, p in model.named_parameters() if p.grad is not None})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-2, atol=1e-4)
