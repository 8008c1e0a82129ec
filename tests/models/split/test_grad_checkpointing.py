"""Activation checkpointing inside the modules (``model.backbone.grad_checkpointing``) and of
InfoPro's decoders: the same gradients and BatchNorm statistics, a lower peak of live tensors,
and a balanced split that counts what checkpointed blocks keep."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from localvision.models.split import StagedTimm
from localvision.models.split.cuts import balanced_cuts
from localvision.models.split.cuts import min_max_cuts
from localvision.models.split.profiling import SplitProfile
from localvision.utils.memory import PeakMemory

from local_models import build, local_model_classes, task_model_params, tiny

NAMES = sorted(local_model_classes())  # every task model in the registries
CKPT = {'backbone.grad_checkpointing': True, 'local_objective.grad_checkpointing': True}


def one_iteration(model, batch) -> tuple:
    """Gradients and BN buffers after one ``train_step`` that does not step (accumulation 2)."""
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    model.train()
    torch.manual_seed(0)  # the same random draws (a two-stage detector's RoI sampler) in each model
    model.train_step(copy.deepcopy(batch), ow)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers() if 'running' in n}
    return grads, buffers


@pytest.mark.parametrize('name', task_model_params())
@pytest.mark.parametrize('k', [1, 2])
def test_checkpointing_gives_the_same_gradients_and_statistics(name, k):
    batch = tiny(name).batch(2)
    overrides = CKPT if k > 1 else {'backbone.grad_checkpointing': True}
    plain, ckpt = build(name, k), build(name, k, **overrides)
    assert ckpt.backbone.grad_checkpointing
    if k > 1:
        assert ckpt.objectives[0].grad_checkpointing and ckpt.objectives[0].decoder is not None
    g1, b1 = one_iteration(plain, batch)
    g2, b2 = one_iteration(ckpt, batch)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=1e-5, atol=1e-6, msg=n)
    for n in b1:  # a recomputation does not update the running statistics again
        torch.testing.assert_close(b2[n], b1[n], rtol=1e-6, atol=1e-7, msg=n)


@pytest.mark.parametrize('name,kwargs', [
    ('convnext_atto', {}),
    ('vit_tiny_patch16_224', dict(img_size=32, patch_size=4, drop_path_rate=0.2)),
])
def test_checkpointed_families_keep_gradients(name, kwargs):
    """ConvNeXt and ViT blocks (stochastic depth too: the random state is replayed)."""
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        st = StagedTimm(name, split=dict(num_modules=2, strategy='equal', input_size=(3, 32, 32)),
                        num_classes=3, grad_checkpointing=ckpt, **kwargs)
        st.resolve_split()
        st.train()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(5)
        h = st.forward_module(0, x)
        st.forward_module(1, h.detach()).square().mean().backward()
        h.square().mean().backward()
        grads.append({n: p.grad for n, p in st.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=n)


def test_checkpointing_only_in_training():
    st = StagedTimm('cifar_resnet20', split=dict(num_modules=1, input_size=(3, 32, 32)), num_classes=3,
                    grad_checkpointing=True)
    st.resolve_split()
    st.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(st(x), st.model.forward_features(x), rtol=0, atol=0)


def peak_of_one_iteration(model, batch) -> int:
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train()
    model.train_step(copy.deepcopy(batch), ow)  # gradients exist from now on
    with PeakMemory('cpu', baseline=(model, ow.optimizer)) as pm:
        model.train_step(copy.deepcopy(batch), ow)
    return pm.peak_bytes


@pytest.mark.parametrize('k', [1, 3])
def test_checkpointing_lowers_the_peak_memory(k):
    """Measured live tensors of one iteration of a CIFAR ResNet-20 classifier (batch 16)."""
    batch = tiny('LocalImageClassifier').batch(16)
    overrides = CKPT if k > 1 else {'backbone.grad_checkpointing': True}
    plain = peak_of_one_iteration(build('LocalImageClassifier', k), batch)
    ckpt = peak_of_one_iteration(build('LocalImageClassifier', k, **overrides), batch)
    assert ckpt < 0.75 * plain, (ckpt, plain)


def test_decoder_checkpointing_lowers_the_peak_memory():
    """A wide segmentation decoder at the full resolution dominates module 0's peak: checkpointed,
    it keeps its stages' outputs and recomputes one stage at a time."""
    batch = tiny('LocalImageClassifier').batch(16)
    wide = {'local_objective.decoder': dict(type='ProgressiveDecoder', widths=(64, 64, 64)),
            'backbone.grad_checkpointing': True}
    plain = peak_of_one_iteration(build('LocalImageClassifier', 2, **wide,
                                        **{'local_objective.grad_checkpointing': False}), batch)
    ckpt = peak_of_one_iteration(build('LocalImageClassifier', 2, **wide, **{'local_objective.grad_checkpointing': True}),
                                 batch)
    assert ckpt < 0.85 * plain, (ckpt, plain)  # measured: 0.76


# -- the cost model of the balanced split ------------------------------------------------------
def test_module_cost_with_and_without_checkpointing():
    prof = SplitProfile(saved=[10, 8, 8, 4], inputs=[1, 3, 3, 2], recompute=[9, 6, 7, 3], exits=[5, 4, 20, 0],
                        tail=2)
    assert prof.module_cost(0, 1, last=False) == 10 + 8 + 4
    assert prof.module_cost(2, 3, last=True) == 8 + 4 + 2
    # block b is recomputed beside the inputs of the blocks up to b (the later ones are freed)
    assert prof.module_cost(0, 1, last=False, checkpointing=True) == max(1 + 3 + 4, 1 + 9, 1 + 3 + 6)
    assert prof.module_cost(0, 2, last=False, checkpointing=True) == 1 + 3 + 3 + 20  # the objective's peak
    assert prof.module_cost(2, 3, last=True, checkpointing=True) == max(3 + 2 + 2, 3 + 7, 3 + 2 + 3)
    # the last blocks run plain: their saved tensors are alive with the objective's
    assert prof.module_cost(0, 1, last=False, checkpointing=True, plain=1) == max(1 + 8 + 4, 1 + 9)
    assert prof.module_cost(0, 1, last=False, checkpointing=True, plain=2) == prof.module_cost(0, 1, last=False)
    assert prof.module_cost(2, 3, last=True, checkpointing=True, plain=0) == 10
    # as many plain blocks as keep the module's own checkpointed cost
    assert prof.plain_blocks(0, 1, last=False) == 0  # 13 > 10: block 1's activations beside the objective's
    assert prof.module_cost(2, 3, last=True, checkpointing=True, plain=1) == max(3 + 4 + 2, 3 + 7) == 10
    assert prof.plain_blocks(2, 3, last=True) == 1  # a small tail: the last block's recomputation is saved


@pytest.mark.parametrize('k', [1, 2, 3, 5])
def test_min_max_cuts_equals_balanced_cuts_on_additive_costs(k):
    g = torch.Generator().manual_seed(k)
    costs = torch.randint(1, 50, (12,), generator=g).tolist()
    exits = torch.randint(0, 20, (12,), generator=g).tolist()
    prof = SplitProfile(saved=costs, inputs=[0] * 12, recompute=[0] * 12, exits=exits, tail=7)
    assert min_max_cuts(12, k, lambda i, j, last: prof.module_cost(i, j, last)) == balanced_cuts(costs, k, exits, 7)


def test_min_max_cuts_is_optimal_for_the_checkpointed_cost():
    import itertools
    g = torch.Generator().manual_seed(3)
    n, k = 9, 3
    prof = SplitProfile(saved=[0] * n, inputs=torch.randint(1, 30, (n,), generator=g).tolist(),
                        recompute=torch.randint(1, 60, (n,), generator=g).tolist(),
                        exits=torch.randint(0, 40, (n,), generator=g).tolist(), tail=11)

    def worst(cuts):
        starts, ends = [0] + [c + 1 for c in cuts], list(cuts) + [n - 1]
        return max(prof.module_cost(i, j, j == n - 1, True) for i, j in zip(starts, ends))
    cuts = min_max_cuts(n, k, lambda i, j, last: prof.module_cost(i, j, last, True))
    assert worst(cuts) == min(worst(list(c)) for c in itertools.combinations(range(n - 1), k - 1))


def test_balanced_split_with_checkpointing_uses_the_checkpointed_cost():
    """ResNet-110 at K=4: the checkpointed cost of the chosen cuts is the optimum of that cost,
    and the profile's block inputs are the activation sizes (16 channels at 32x32 in stage 1)."""
    split = dict(num_modules=4, strategy='balanced', input_size=(3, 32, 32))
    st = StagedTimm('cifar_resnet110', split=split, num_classes=10, grad_checkpointing=True)
    cuts = st.resolve_split()
    prof = st.split_profile
    assert prof.inputs[2] == 2 * 16 * 32 * 32 * 4  # profiling batch 2, float32
    assert all(r > 0 for r in prof.recompute) and all(r <= s + i for r, s, i in
                                                      zip(prof.recompute, prof.saved, prof.inputs))
    cost = lambda i, j, last: prof.module_cost(i, j, last, True)  # noqa: E731
    assert cuts == min_max_cuts(st.num_blocks, 4, cost)
    plain = StagedTimm('cifar_resnet110', split=split, num_classes=10)
    plain_cuts = plain.resolve_split()

    def worst(cs):
        starts, ends = [0] + [c + 1 for c in cs], list(cs) + [st.num_blocks - 1]
        return max(cost(i, j, j == st.num_blocks - 1) for i, j in zip(starts, ends))
    assert worst(cuts) <= worst(plain_cuts)


@pytest.mark.parametrize('k', [1, 4])
def test_blocks_whose_recomputation_lowers_nothing_run_plain(k):
    """With checkpointing the balanced split leaves the last blocks of a module plain where the
    module's own cost stays as it is: less recomputation, the same peak."""
    split = dict(num_modules=k, strategy='balanced', input_size=(3, 32, 32))
    st = StagedTimm('cifar_resnet110', split=split, num_classes=10, grad_checkpointing=True)
    st.resolve_split()
    prof, ranges = st.split_profile, st.module_ranges()
    assert prof is not None and 0 < len(st.plain) <= k
    costs = [prof.module_cost(r[0], r[-1], n == k - 1, True) for n, r in enumerate(ranges)]
    for n, r in enumerate(ranges):
        plain = [i for i in r if i in st.plain]
        assert plain == list(r)[len(r) - len(plain):]  # a module's last blocks
        assert prof.module_cost(r[0], r[-1], n == k - 1, True, len(plain)) <= costs[n]
    assert max(ranges[-1]) in st.plain  # the classifier's tail is small: the last block need not be recomputed


def test_plain_blocks_keep_the_peak_memory():
    """Measured: the peak with the plain blocks is that of checkpointing every block (within 1 %),
    and the gradients are those without checkpointing."""
    batch = tiny('LocalImageClassifier').batch(16)
    model = build('LocalImageClassifier', 3, **dict(CKPT, **{'split.strategy': 'balanced'}))
    assert model.backbone.plain
    every, off = copy.deepcopy(model), copy.deepcopy(model)
    every.backbone.plain = frozenset()
    off.backbone.grad_checkpointing = False
    for o in off.objectives:
        o.grad_checkpointing = False
    g_off, _ = one_iteration(copy.deepcopy(off), batch)
    g_plain, _ = one_iteration(copy.deepcopy(model), batch)
    for n in g_off:
        torch.testing.assert_close(g_plain[n], g_off[n], rtol=1e-5, atol=1e-6, msg=n)
    with_plain, all_ckpt = peak_of_one_iteration(model, batch), peak_of_one_iteration(every, batch)
    assert with_plain <= 1.01 * all_ckpt, (with_plain, all_ckpt)
    assert peak_of_one_iteration(off, batch) > 1.3 * with_plain


@pytest.mark.parametrize('name', NAMES)
def test_decoders_follow_the_backbone_flag_unless_the_objective_says_otherwise(name):
    follows = build(name, 2, **{'backbone.grad_checkpointing': True})
    assert follows.objectives[0].grad_checkpointing and follows.objectives[0].decoder is not None
    told = build(name, 2, **{'backbone.grad_checkpointing': True, 'local_objective.grad_checkpointing': False})
    assert not told.objectives[0].grad_checkpointing
    assert not build(name, 2).objectives[0].grad_checkpointing
