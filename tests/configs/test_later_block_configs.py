"""The configs of the papers' settings for the objectives built on later blocks (AugLocal, MAN, HPFF).

The configs are found by glob (``configs/<task>/*_{auglocal,man,hpff}_*.py``): each loads, names only
registered objectives, builds through mmengine's registries and trains one iteration (tiny inputs, batch
2) with finite losses. The settings taken from the papers' public code are checked exactly: against the
code's own formulas (AugLocal's pyramidal depth and uniform sampling, MAN's and HPFF's per-module
lambdas) on the built models, and against the code's tables and commands in the configs.
"""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from localvision.models.objectives import registered_objectives
from localvision.utils.config import model_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                 if re.search(r'_(auglocal|man|hpff)_', osp.basename(p)))
# > 10 s on the busy 2-core CPU (as in test_cls_configs): the deep nets (ResNet-101 K=34 AugLocal alone
# 12-70 s: 33 auxiliary nets of up to 4 bottlenecks) and RetinaNet R50 with its full heads; 1-20 s unloaded-loaded
SLOW = ('_resnet101_', '_resnet110_', 'retinanet_')
HAS_HPFF = 'HPFF' in registered_objectives()
CIFAR_BLOCKS = {32: 5, 110: 18}  # blocks per stage of the CIFAR ResNets (3 stages)


def cfg_of(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', 'det' if name.startswith('retinanet') else 'cls', name))


def _param(path):
    name = osp.basename(path)
    marks = [pytest.mark.slow] if any(n in name for n in SLOW) else []
    if '_hpff_' in name:
        marks.append(pytest.mark.skipif(not HAS_HPFF, reason='HPFF is not registered yet (objectives/hpff.py)'))
    return pytest.param(path, id=name, marks=marks)


def objective_types(obj) -> set:
    """Every objective type a ``model.local_objective`` names, nested ones (``base``, ``independent``) included."""
    out = set()
    for o in (obj if isinstance(obj, (list, tuple)) else [obj]):
        out.add(o['type'])
        for key in ('base', 'independent'):
            if isinstance(o.get(key), dict):
                out |= objective_types(o[key])
    return out


# -- every config ---------------------------------------------------------------------------------
def test_the_glob_finds_every_method_and_task():
    names = {osp.basename(p) for p in CONFIGS}
    assert len(CONFIGS) >= 10
    for method in ('auglocal', 'man_infopro', 'hpff'):
        assert {f'cifar_resnet32_{method}_k16.py', f'cifar_resnet110_{method}_k55.py'} <= names
    assert {'imagenet_resnet101_auglocal_k34.py', 'imagenet_resnet101_man_infopro_k4.py',
            'imagenet_deit_small_man_k4.py', 'retinanet_r50_man_k4.py'} <= names


@pytest.mark.parametrize('path', [_param(p) for p in CONFIGS])
def test_config_loads_and_names_registered_objectives(path):
    cfg = Config.fromfile(path)  # imports localvision.cls / localvision.det (custom_imports)
    types = objective_types(cfg.model.local_objective)
    method = re.search(r'_(auglocal|man|hpff)_', osp.basename(path)).group(1)
    assert {'auglocal': 'AugLocal', 'man': 'MAN', 'hpff': 'HPFF'}[method] in types
    assert types <= set(registered_objectives()), types - set(registered_objectives())


def _cls_one_iteration(cfg):
    """The model at 32 px (an ImageNet ResNet ends at 1x1, a ViT keeps its patches: 2x2 tokens), batch 2."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    m = model_config(cfg)
    m.split = dict(m.split, input_size=(3, 32, 32))
    if 'img_size' in m.backbone:
        m.backbone.img_size = 32
    model = MODELS.build(m)
    torch.manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i % 2) for i in range(2)])
    return model, data, 'loss_cls'


def _det_one_iteration(cfg):
    """The config's RetinaNet R50 (FPN, full heads) on 64x64 images, batch 2, two boxes each."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    m = model_config(cfg)
    m.split = dict(m.split, input_size=(3, 64, 64))
    model = MODELS.build(m)
    model.init_weights()
    torch.manual_seed(0)
    samples = []
    for i in range(2):
        gt = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]]),
                          labels=torch.tensor([0, 1]))
        s = DetDataSample(gt_instances=gt)
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0),
                            img_id=i))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    return model, data, 'loss_bbox'


@pytest.mark.parametrize('path', [_param(p) for p in CONFIGS])
def test_config_builds_and_trains_one_iteration(path):
    name = osp.basename(path)
    cfg = Config.fromfile(path)
    model, data, task_loss = (_det_one_iteration if name.startswith('retinanet') else _cls_one_iteration)(cfg)
    cuts = cfg.model.split.cuts
    k = len(cuts) + 1
    assert model.backbone.cuts == [model.backbone.seq.index_of(c) for c in cuts]
    assert model.num_units == k and len(model.objectives) == k - 1
    wanted = cfg.model.local_objective
    wanted = [w['type'] for w in wanted] if isinstance(wanted, (list, tuple)) else [wanted['type']] * (k - 1)
    assert [type(o).__name__ for o in model.objectives] == wanted

    first = next(model.backbone.parameters()).detach().clone()
    model.train()
    losses = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert task_loss in losses  # the last module's head
    for j in (0, k - 2):  # the first and the last local module
        assert any(n.startswith(f'm{j}.') and 'loss' in n for n in losses), sorted(losses)
    assert not torch.equal(first, next(model.backbone.parameters()))  # the first module trained
    check_built(name, model)


# -- the papers' settings on the built models ---------------------------------------------------------
def auglocal_code_depths(d: int, tau: float, k: int) -> list:
    """AugLocal's networks/resnet.py aux_depth_list (tau = 0: no pyramid)."""
    return [max(1, round(d * (1 - i * tau / (k - 2)) + i * tau / (k - 2) * 1)) for i in range(k - 1)]


def auglocal_code_layers(layer: int, n_layers: int, depth: int) -> list:
    """AugLocal's networks/auxiliary_nets.py 'unifSamp' aux_layer_index of the module ending at ``layer``."""
    if depth >= n_layers - 1 - layer:
        return list(range(layer + 1, n_layers))
    return [round(layer + (n_layers - layer - 1) / depth * i) for i in range(1, depth + 1)]


def next_stages(cuts, blocks_per_stage: int) -> list:
    """MAN's resnetInfoPro_MAN.py: the stage of the block after each cut (its ``lo``)."""
    return [s + 1 if b == blocks_per_stage - 1 else s for s, b in cuts]


def check_built(name: str, model) -> None:
    objs = model.objectives
    m = re.match(r'cifar_resnet(\d+)_(\w+)_k(\d+)\.py', name)
    if m and m.group(2) == 'auglocal':
        net, k = int(m.group(1)), int(m.group(3))
        assert model.num_units == k and model.backbone.cuts == list(range(k - 1))  # one unit per module
        assert [o.depth for o in objs] == auglocal_code_depths({32: 2, 110: 3}[net], 0.5, k)
        assert [o.indices for o in objs] == [auglocal_code_layers(j, k, o.depth) for j, o in enumerate(objs)]
    elif m:  # MAN / HPFF: the code's "K" is the command's, one module fewer (the stem joins the first block)
        net, karg = int(m.group(1)), int(m.group(3))
        assert model.num_units == karg - 1 and model.backbone.cuts == list(range(1, karg - 1))
        recon, task = [o.base.lambda_recon for o in objs], [o.base.lambda_task for o in objs]
        if m.group(2) == 'man_infopro':
            stages = next_stages(model.backbone.split_cfg['cuts'], CIFAR_BLOCKS[net])
            assert recon == pytest.approx([5 * (1 - s / (karg - 2)) for s in stages], abs=1e-12)
            assert task == pytest.approx([0.5 * (1 - s / (karg - 2)) for s in stages], abs=1e-12)
            assert [(o.momentum, o.scale) for o in objs] == [(0.995, None)] * len(objs)
            assert [o.source for o in objs] == [model.backbone.seq.infos[c + 1].name for c in model.backbone.cuts]
        else:
            ratios = [i / (karg - 2) for i in range(1, karg - 2)]
            assert recon == pytest.approx([5 * (1 - r) for r in ratios] + [0], abs=1e-12)
            assert task == pytest.approx([0.5 * (1 - r) for r in ratios] + [1], abs=1e-12)
            assert {(o.independent_weight, o.cascade_weight, o.patches) for o in objs} == {(0.001, 0.999, 2)}
            assert {type(o.base.head).__name__ for o in objs} == {'PatchFusion'}
    elif name == 'imagenet_resnet101_auglocal_k34.py':
        assert model.backbone.cuts == list(range(33)) and model.backbone.num_blocks == 34
        assert [o.depth for o in objs] == auglocal_code_depths(4, 0.0, 34) == [4] * 33
        assert [o.indices for o in objs] == [auglocal_code_layers(j, 34, 4) for j in range(33)]
    elif name == 'imagenet_resnet101_man_infopro_k4.py':
        assert model.backbone.cuts == [6, 16, 24]
        assert [o.source for o in objs] == ['layer2.3', 'layer3.9', 'layer3.17']
        assert [(o.momentum, o.scale, o.base.lambda_recon, o.base.lambda_task) for o in objs] == [
            (0.995, None, 5, 0.75)] * 3
        convs = [[c.out_channels for c in o.base.head.modules() if isinstance(c, torch.nn.Conv2d)] for o in objs]
        assert convs == [[128, 256, 512, 2048], [256, 256, 512, 2048], [256, 256, 512, 2048]]
    elif name == 'imagenet_deit_small_man_k4.py':
        assert model.backbone.cuts == [3, 6, 9]  # the stem (patch embedding), then 3 blocks per module
        assert [o.source for o in objs] == ['blocks.3', 'blocks.6', 'blocks.9']
        assert all(o.momentum == 0.995 and isinstance(o.scale, torch.nn.Parameter) for o in objs)
    elif name == 'retinanet_r50_man_k4.py':
        assert model.backbone.cuts == [3, 7, 13]  # stem + layer1 | layer2 | layer3 | layer4
        assert [o.source for o in objs] == ['layer2.0', 'layer3.0', 'layer4.0']  # resnet_man.py's ema_sources
        assert all(o.momentum == 0.995 and isinstance(o.scale, torch.nn.Parameter) for o in objs)
        assert all(type(o.base).__name__ == 'DetGreedy' and o.base.head.cls.in_channels == 256 for o in objs)
    else:
        raise AssertionError(f'{name}: no expectations of the built model; add them here')


# -- the papers' settings in the configs ------------------------------------------------------------
R32_MAN_CUTS = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (3, 0), (3, 1),
                (3, 2), (3, 3)]


def test_cifar_cuts_are_the_codes_tables():
    # AugLocal's networks/configs.py: the stem, then every block but the last
    assert cfg_of('cifar_resnet32_auglocal_k16.py').model.split.cuts == [(0, 0)] + R32_MAN_CUTS
    assert cfg_of('cifar_resnet32_auglocal_k16.py').model.split == cfg_of('cifar_resnet32_greedy_k16.py').model.split
    r110 = [(s, b) for s in (1, 2, 3) for b in range(18)][:-1]
    assert cfg_of('cifar_resnet110_auglocal_k55.py').model.split.cuts == [(0, 0)] + r110
    # MAN's / HPFF's network/config.py InfoPro tables: module ends (1,0)..(3,last), the stem in module 0
    for method in ('man_infopro', 'hpff'):
        assert cfg_of(f'cifar_resnet32_{method}_k16.py').model.split.cuts == R32_MAN_CUTS
        cuts = cfg_of(f'cifar_resnet110_{method}_k55.py').model.split.cuts
        assert len(cuts) == 53 and cuts[:2] == [(1, 0), (1, 1)] and cuts[17:19] == [(1, 17), (2, 0)]
        assert cuts[-1] == (3, 16)


def test_cifar_objective_settings_are_the_commands():
    for net, d in ((32, 2), (110, 3)):  # README.md: --aux_net_depth 2 / 3 --pyramid --pyramid_coeff 0.5
        obj = cfg_of(f'cifar_resnet{net}_auglocal_k{16 if net == 32 else 55}.py').model.local_objective
        assert obj == dict(type='AugLocal', depth=d, pyramid=0.5)
    man = cfg_of('cifar_resnet32_man_infopro_k16.py').model.local_objective
    assert (man.type, man.momentum, man.get('learnable_scale', False)) == ('MAN', 0.995, False)
    assert (man.base.type, man.base.loss_mode) == ('InfoPro', 'softmax')
    # ratio = stage of the next block / 14: stage 1 for 4 cuts, 2 for 5, 3 for 5
    assert man.base.lambda_recon == pytest.approx([5 * 13 / 14] * 4 + [5 * 12 / 14] * 5 + [5 * 11 / 14] * 5)
    assert man.base.lambda_task == pytest.approx([0.5 * 13 / 14] * 4 + [0.5 * 12 / 14] * 5 + [0.5 * 11 / 14] * 5)
    man110 = cfg_of('cifar_resnet110_man_infopro_k55.py').model.local_objective.base
    assert man110.lambda_recon[0] == pytest.approx(5 * 52 / 53) and man110.lambda_recon[-1] == pytest.approx(5 * 50 / 53)
    hpff = cfg_of('cifar_resnet32_hpff_k16.py').model.local_objective
    assert (hpff.type, hpff.independent_weight, hpff.cascade_weight, hpff.patches) == ('HPFF', 0.001, 0.999, 2)
    assert hpff.independent == dict(type='Greedy', head=dict(type='ConvFCHead'))
    assert hpff.base.lambda_recon == pytest.approx([5 * (14 - i) / 14 for i in range(1, 14)] + [0])
    assert hpff.base.lambda_task == pytest.approx([0.5 * (14 - i) / 14 for i in range(1, 14)] + [1])
    hpff110 = cfg_of('cifar_resnet110_hpff_k55.py').model.local_objective.base
    assert len(hpff110.lambda_recon) == 53 and hpff110.lambda_recon[-2:] == pytest.approx([5 / 53, 0])


def test_cifar_recipe_is_400_epochs_of_the_papers_schedule():
    base = cfg_of('cifar_resnet32_e2e.py')
    for path in CONFIGS:
        name = osp.basename(path)
        if not name.startswith('cifar_'):
            continue
        cfg = Config.fromfile(path)
        assert cfg.optim_wrapper == base.optim_wrapper and cfg.train_dataloader.batch_size == 1024
        assert cfg.train_cfg.max_epochs == 400, name
        warmup, cosine = cfg.param_scheduler
        assert warmup == base.param_scheduler[0]
        assert cosine == dict(type='CosineAnnealingLR', T_max=400, by_epoch=True, begin=0, end=400)


def test_imagenet_and_coco_settings_are_the_codes():
    aug = cfg_of('imagenet_resnet101_auglocal_k34.py')
    assert len(aug.model.split.cuts) == 33 and aug.model.split.cuts[:5] == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert aug.model.split.cuts[-3:] == [(3, 22), (4, 0), (4, 1)]
    assert aug.model.local_objective == dict(type='AugLocal', depth=4, pyramid=0.0)
    e2e = cfg_of('imagenet_resnet101_e2e.py')
    man = cfg_of('imagenet_resnet101_man_infopro_k4.py')
    for c in (aug, man):  # imagenet_DDP.py's defaults: lr 0.4 at batch 1024, 90 epochs
        assert (c.optim_wrapper, c.param_scheduler, c.train_cfg) == (e2e.optim_wrapper, e2e.param_scheduler,
                                                                    e2e.train_cfg)
    assert man.model.split.cuts == [(2, 2), (3, 8), (3, 16)]
    objs = man.model.local_objective
    assert [(o.type, o.momentum, o.get('learnable_scale', False)) for o in objs] == [('MAN', 0.995, False)] * 3
    assert [(o.base.lambda_recon, o.base.lambda_task) for o in objs] == [(5, 0.75)] * 3
    assert [o.base.decoder.widths for o in objs] == [(128, 32, 12), (192, 64, 32, 12), (192, 64, 32, 12)]
    vit = cfg_of('imagenet_deit_small_man_k4.py')
    assert vit.model.split.cuts == [(1, 2), (1, 5), (1, 8)] and vit.model.backbone.model_name == 'deit_small_patch16_224'
    assert vit.model.local_objective == dict(type='MAN', momentum=0.995, learnable_scale=True,
                                             base=dict(type='Greedy', head=dict(type='PoolLinearHead')))
    det = cfg_of('retinanet_r50_man_k4.py')
    assert det.model.split.cuts == [(1, 2), (2, 3), (3, 5)] and det.model.backbone.model_name == 'resnet50'
    assert det.model.local_objective == dict(
        type='MAN', momentum=0.995, learnable_scale=True,
        base=dict(type='DetGreedy', head=dict(type='DenseDetAuxHead', channels=256)))
