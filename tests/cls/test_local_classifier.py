"""LocalImageClassifier with any objective per module, the image target, and real memory savings."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from localvision.cls import LocalImageClassifier
from localvision.models.objectives import DGL, Greedy, InfoPro
from mmpretrain.structures import DataSample
from localvision.utils.memory import measure_peak_memory

PRE = dict(type='ImgDataPreprocessor', mean=[125.3, 123.0, 113.9], std=[51.6, 50.8, 51.3], bgr_to_rgb=True)
INFOPRO = dict(type='InfoPro', loss_mode='contrast', lambda_recon=(6, 1), lambda_task=(0, 2))


def make_model(objective, k=4, executor='PerModuleBackward', context=None, model_name='cifar_resnet20',
               split=None):
    torch.manual_seed(0)
    return LocalImageClassifier(
        backbone=dict(model_name=model_name), head=dict(type='LinearClsHead', num_classes=4),
        split=split or dict(input_size=(3, 32, 32), num_modules=k, strategy='equal'),
        local_objective=objective, context=context, executor=dict(type=executor), data_preprocessor=PRE)


def make_batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


def test_each_module_can_have_its_own_objective_and_lambdas_follow_the_schedule():
    model = make_model([dict(type='Greedy'), dict(type='DGL'), INFOPRO])
    assert [type(o) for o in model.objectives] == [Greedy, DGL, InfoPro]
    assert (model.objectives[2].lambda_recon, model.objectives[2].lambda_task) == (1.0, 2.0)  # last local
    log = model.train_step(make_batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert {'m0.loss_cls', 'm1.loss_cls', 'm2.loss_recon', 'm2.loss_contrast', 'loss_cls'} <= set(log)
    shared = make_model(INFOPRO)
    assert [(o.lambda_recon, o.lambda_task) for o in shared.objectives] == [(6.0, 0.0), (3.5, 1.0), (1.0, 2.0)]
    assert shared.objectives[0].head is None  # lambda_task = 0 on module 0: no aux classifier


def test_make_context_gives_the_image_in_0_1_as_the_model_sees_it():
    model = make_model(INFOPRO)
    batch = make_batch(2)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    ctx = model.make_context(data['inputs'], data['data_samples'])
    expected = torch.stack([im[[2, 1, 0]] for im in batch['inputs']]).float() / 255
    torch.testing.assert_close(ctx.image01(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('objective,context', [(INFOPRO, None), (dict(type='DGL'), None),
                                               (dict(type='Greedy'), dict(type='ContSup', variant='R1E'))])
def test_per_module_and_joint_backward_agree_for_every_method(objective, context):
    batch = make_batch()
    grads = []
    for ex in ('PerModuleBackward', 'JointBackward'):
        model = make_model(objective, k=3, executor=ex, context=context)
        model.train_step(copy.deepcopy(batch), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                                                            accumulative_counts=2))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('objective,context', [(INFOPRO, None),
                                               (dict(type='Greedy'), dict(type='ContSup', variant='R1E'))])
def test_memory_stays_real_with_infopro_and_contsup(objective, context):
    """Per-module backward keeps one module's graph alive: its peak is well below joint backward's."""
    batch = make_batch(16)
    peaks = {}
    for ex in ('PerModuleBackward', 'JointBackward'):
        model = make_model(objective, k=4, executor=ex, context=context)
        ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        model.train_step(copy.deepcopy(batch), ow)
        peaks[ex] = measure_peak_memory(lambda: model.train_step(copy.deepcopy(batch), ow), device='cpu',
                                        baseline=(model, ow.optimizer))
    assert peaks['JointBackward'] > 1.3 * peaks['PerModuleBackward']


def test_balanced_split_profiles_infopro_exits_on_the_image_size():
    model = make_model(INFOPRO, split=dict(input_size=(3, 32, 32), num_modules=2, strategy='balanced'))
    assert model.num_units == 2 and len(model.backbone.cuts) == 1


TINY_VIT = dict(model_name='vit_tiny_patch16_224', img_size=32, patch_size=8, depth=3, embed_dim=24, num_heads=2,
                dynamic_img_size=True)


@pytest.mark.parametrize('backbone', [dict(model_name='cifar_resnet20'), dict(model_name='convnext_atto'), TINY_VIT],
                         ids=['cifar_resnet', 'convnext', 'vit'])
def test_every_objective_and_context_composes_with_every_backbone_family(backbone):
    torch.manual_seed(0)
    model = LocalImageClassifier(
        backbone=backbone, head=dict(type='LinearClsHead', num_classes=4), split=dict(input_size=(3, 32, 32), num_modules=4, strategy='equal'),
        local_objective=[dict(type='DGL'), dict(type='InfoPro', loss_mode='softmax', lambda_recon=1, lambda_task=1),
                         dict(type='InfoPro', loss_mode='contrast', lambda_recon=0.5, lambda_task=1)],
        context=dict(type='ContSup', variant='R1E'), data_preprocessor=PRE)
    log = model.train_step(make_batch(4), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert {'m0.loss_cls', 'm1.loss_recon', 'm1.loss_cls', 'm2.loss_recon', 'm2.loss_contrast', 'loss_cls'} <= set(log)
    assert all(torch.isfinite(v) for v in log.values())
    model.eval()
    assert model(torch.randn(2, 3, 32, 32), mode='tensor').shape == (2, 4)
