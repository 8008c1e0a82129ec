"""The CIFAR configs of every method: published cuts and lambdas, the papers' recipe, mmpretrain's
data set / head / preprocessor, and they build."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = ('dgl', 'infopro_softmax', 'infopro_contrast', 'contsup_e', 'contsup_r1', 'contsup_r1e')
# (lambda1_first, lambda2_first, lambda1_last, lambda2_last) of the InfoPro paper
LAMBDAS = {32: {2: (5, 1, 0, 0), 4: (6, 0, 1, 2), 8: (5, 0, 0, 2), 16: (5, 0.05, 0.2, 0.5)},
           110: {2: (5, 0.5, 0, 0), 4: (1, 0, 0, 1), 8: (5, 0, 0, 1), 16: (5, 0, 0.5, 1)}}
# the published cuts, as (stage, block) after which a module ends (ResNet-110 K=8/16: none published)
CUTS = {32: {2: [(2, 1)], 4: [(1, 2), (2, 1), (3, 0)], 8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2)],
             16: [(0, 0)] + [(s, b) for s in (1, 2, 3) for b in range(5) if (s, b) <= (3, 3)]},
        110: {2: [(2, 8)], 4: [(1, 11), (2, 7), (3, 3)]}}


def cfg_of(net, method, k):
    return Config.fromfile(osp.join(ROOT, f'configs/cls/cifar_resnet{net}_{method}_k{k}.py'))


@pytest.mark.parametrize('net', [32, 110])
@pytest.mark.parametrize('k', [2, 4, 8, 16])
def test_every_method_inherits_the_greedy_split_and_sets_its_objective(net, k):
    greedy = cfg_of(net, 'greedy', k)
    for method in METHODS:
        cfg = cfg_of(net, method, k)
        assert cfg.model.split == greedy.model.split
        assert cfg.optim_wrapper == greedy.optim_wrapper and cfg.param_scheduler == greedy.param_scheduler
        assert cfg.train_dataloader.dataset.data_root == 'data/cifar10'
        assert cfg.model.split.get('cuts') == CUTS[net].get(k)
        obj = cfg.model.local_objective
        if method == 'dgl':
            assert obj == dict(type='DGL')
        elif method.startswith('infopro'):
            l1a, l2a, l1b, l2b = LAMBDAS[net][k]
            assert obj.type == 'InfoPro' and obj.loss_mode == method.split('_')[1]
            assert tuple(obj.lambda_recon) == (l1a, l1b) and tuple(obj.lambda_task) == (l2a, l2b)
            assert 'head' not in obj
        else:
            assert obj.type == 'Greedy'
            assert cfg.model.context == dict(type='ContSup', variant=method.split('_')[1].upper())


def test_there_is_a_config_for_every_net_method_and_k():
    names = {osp.basename(p) for p in glob.glob(osp.join(ROOT, 'configs/cls/cifar_resnet*_k*.py'))}
    for net in (32, 110):
        for method in METHODS:
            for k in (2, 4, 8, 16):
                assert f'cifar_resnet{net}_{method}_k{k}.py' in names


@pytest.mark.parametrize('net', [32, 110])
def test_the_papers_recipe_on_mmpretrains_cifar10(net):
    cfg = Config.fromfile(osp.join(ROOT, f'configs/cls/cifar_resnet{net}_e2e.py'))
    assert cfg.default_scope == 'mmpretrain' and cfg.custom_imports.imports == ['localvision.cls']
    assert cfg.model.type == 'LocalImageClassifier' and cfg.model.backbone.model_name == f'cifar_resnet{net}'
    assert cfg.model.split.get('num_modules', 1) == 1 and 'cuts' not in cfg.model.split
    assert cfg.model.head.type == 'LinearClsHead' and cfg.model.head.num_classes == 10 and cfg.model.neck is None
    assert cfg.data_preprocessor == dict(num_classes=10, mean=[125.3, 123.0, 113.9],
                                         std=[63.0, 62.1, 66.7], to_rgb=False)
    for where, split in (('train_dataloader', 'train'), ('val_dataloader', 'test'), ('test_dataloader', 'test')):
        ds = cfg[where].dataset
        assert (ds.type, ds.data_root, ds.split, ds.download) == ('CIFAR10', 'data/cifar10', split, False)
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline] == ['RandomCrop', 'RandomFlip', 'PackInputs']
    assert cfg.train_dataloader.dataset.pipeline[0] == dict(type='RandomCrop', crop_size=32, padding=4,
                                                                      padding_mode='reflect')
    assert cfg.train_dataloader.batch_size == 1024 and cfg.val_evaluator == dict(type='Accuracy', topk=(1, ))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ('SGD', 0.8, 0.9, True, 1e-4)
    assert cfg.train_cfg.max_epochs == 160


@pytest.mark.parametrize('method', METHODS)
def test_resnet32_k4_models_build_with_the_published_cuts(method):
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    cfg = cfg_of(32, method, 4)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    assert model.backbone.cuts == [model.backbone.seq.index_of(c) for c in [(1, 2), (2, 1), (3, 0)]]
    if method.startswith('infopro'):
        assert [(o.lambda_recon, o.lambda_task) for o in model.objectives] == [(6, 0), (3.5, 1), (1, 2)]
    assert (model.context is not None) == method.startswith('contsup')
