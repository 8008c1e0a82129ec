"""Every classification config loads on mmpretrain's bases, builds and trains one iteration.

The configs are found by glob (a new config is tested without being listed here). Large inputs
are shrunk (input_size / img_size, small images, batch 2) and the structure is kept: the backbone,
split, objectives, context, head and data preprocessor of the config. The big nets (ResNet-152,
ViT-B) are marked slow. The stock-mmpretrain example (``resnet50_infopro_k4_from_mmpretrain.py``)
is also checked line by line against its base and trained + evaluated through tools/train.py on
a tiny ImageNet-layout folder.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from localvision.utils.config import model_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'cls', '*.py')))
EXAMPLE = osp.join(ROOT, 'configs', 'cls', 'resnet50_infopro_k4_from_mmpretrain.py')
# slow: the deep nets (up to ~10 s and more each on a busy 2-core CPU even at 32 px), those whose cuts
# are balanced by a measured dry run of a big net (ResNet-50 K=4, ResNet-110 K=8/16), and K=2/8/16 of
# the CIFAR tables (every objective and context type stays in the fast set at K=4)
SLOW = ('_resnet110_', '_resnet101_', '_resnet152_', '_vit_base_', 'resnet50_infopro_k4', '_k2.py', '_k8', '_k16')
DATA_SETS = ('CIFAR10', 'CustomDataset', 'ImageNet')


def _param(path):
    name = osp.basename(path)
    slow = any(n in name for n in SLOW)
    return pytest.param(path, id=name, marks=[pytest.mark.slow] if slow else [])


def shrunk(cfg: Config) -> tuple:
    """``(model config, image size)``: the config's model with the data preprocessor the Runner
    would merge in, its inputs shrunk to 32 px images (an ImageNet ResNet ends at 1x1; a ViT keeps
    its patch size, so 2x2 tokens)."""
    m = model_config(cfg)  # with the data preprocessor, as mmengine's Runner merges it in
    size = m.get('split', {}).get('input_size', (3, 224, 224))[-1]
    size = min(size, 32)
    m.split = dict(m.get('split') or {}, input_size=(3, size, size))
    if 'img_size' in m.backbone:
        m.backbone.img_size = size
    return m, size


def one_iteration(model, size: int, batch: int = 2) -> dict:
    torch.manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(batch)]
    from mmpretrain.structures import DataSample
    data = dict(inputs=inputs, data_samples=[DataSample().set_gt_label(i % 2) for i in range(batch)])
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    return model.train_step(data, optim), data


@pytest.mark.parametrize('path', [_param(p) for p in CONFIGS])
def test_cls_config_builds_and_trains_one_iteration(path):
    cfg = Config.fromfile(path)  # imports localvision.cls (custom_imports)
    assert cfg.default_scope == 'mmpretrain'
    assert 'localvision.cls' in cfg.custom_imports.imports
    assert cfg.model.type == 'LocalImageClassifier'
    # mmpretrain's data sets, transforms, evaluator and head; nothing downloads
    for where in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[where].dataset
        assert ds.type in DATA_SETS, f'{where}: {ds.type}'
        if ds.type == 'CIFAR10':
            assert ds.download is False
    assert all(t.type != 'PackClsInputs' for t in cfg.train_dataloader.dataset.pipeline)
    assert cfg.val_evaluator.type == 'Accuracy'
    assert cfg.model.head.type in ('LinearClsHead', 'VisionTransformerClsHead')
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes

    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    m, size = shrunk(cfg)
    model = MODELS.build(m)
    split = m.split
    k = split.get('num_modules') or (len(split['cuts']) + 1 if split.get('cuts') else 1)
    assert model.num_units == k and len(model.objectives) == k - 1
    assert (model.context is not None) == bool(m.get('context'))

    first = next(model.backbone.parameters()).detach().clone()
    losses, data = one_iteration(model, size)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert 'loss_cls' in losses  # the head's loss (last module)
    if k > 1:
        assert any(name.startswith(f'm{k - 2}.') for name in losses), losses  # the last local module's loss
    assert not torch.equal(first, next(model.backbone.parameters()))  # the first module trained
    model.eval()
    preds = model.val_step(data)
    assert len(preds) == 2 and preds[0].pred_score.shape == (m.head.num_classes, )


def test_every_config_is_tested_and_none_is_left_on_localvisions_old_types():
    names = {osp.basename(p) for p in CONFIGS}
    assert {'imagenet_resnet101_infopro_k2.py', 'imagenet_resnet101_e2e.py', 'imagenet_resnet152_infopro_k2.py',
            'imagenet_resnet152_e2e.py', 'imagenet_resnet50_infopro_k4.py', 'imagenet_resnet50_e2e.py',
            'imagenet_deit_small_greedy_k4.py', 'imagenet_deit_small_e2e.py', 'imagenet_vit_base_greedy_k4.py',
            'imagenet_vit_base_e2e.py', 'resnet50_infopro_k4_from_mmpretrain.py'} <= names
    old = ('CIFAR10Dataset', 'ImageFolderDataset', 'PackClsInputs', 'ClsDataSample', 'ImgDataPreprocessor',
           "default_scope = 'localvision'")
    for p in CONFIGS + glob.glob(osp.join(ROOT, 'configs', '_base_', '**', '*.py'), recursive=True):
        text = open(p).read()
        assert not [o for o in old if o in text], p


# -- the ImageNet configs: the papers' cuts, lambdas and recipes ---------------------------------
@pytest.mark.parametrize('net,cut,lam_task', [(101, (2, 0), 0.75), (152, (2, 5), 1)])
def test_imagenet_infopro_star_k2_has_the_published_cut_lambdas_and_recipe(net, cut, lam_task):
    cfg = Config.fromfile(osp.join(ROOT, f'configs/cls/imagenet_resnet{net}_infopro_k2.py'))
    e2e = Config.fromfile(osp.join(ROOT, f'configs/cls/imagenet_resnet{net}_e2e.py'))
    assert cfg.model.split.cuts == [cut]
    assert e2e.model.split.get('num_modules', 1) == 1 and 'cuts' not in e2e.model.split
    obj = cfg.model.local_objective
    assert (obj.type, obj.loss_mode, obj.lambda_recon, obj.lambda_task) == ('InfoPro', 'softmax', 5, lam_task)
    for c in (cfg, e2e):  # same recipe: SGD Nesterov lr 0.4 at batch 1024, cosine over 90 epochs, no warm-up
        assert c.model.backbone.model_name == f'resnet{net}' and c.model.backbone.pretrained is False
        opt = c.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ('SGD', 0.4, 0.9, True, 1e-4)
        assert c.param_scheduler == dict(type='CosineAnnealingLR', T_max=90, by_epoch=True, begin=0, end=90)
        assert c.train_cfg.max_epochs == 90 and c.auto_scale_lr.base_batch_size == 1024
        assert c.train_dataloader.batch_size * 8 == 1024
        assert c.train_dataloader.dataset.type == 'ImageNet' and c.train_dataloader.dataset.data_root == 'data/imagenet'
        assert c.model.head.loss.type == 'CrossEntropyLoss'


@pytest.mark.parametrize('name,timm_name,gpus', [('deit_small', 'deit_small_patch16_224', 4),
                                                 ('vit_base', 'vit_base_patch16_224', 16)])
def test_vit_configs_have_the_deit_recipe(name, timm_name, gpus):
    for kind in ('e2e', 'greedy_k4'):
        c = Config.fromfile(osp.join(ROOT, f'configs/cls/imagenet_{name}_{kind}.py'))
        assert c.model.backbone.model_name == timm_name and c.model.backbone.img_size == 224
        assert c.model.backbone.drop_path_rate == 0.1 and c.model.neck is None
        assert c.model.split.get('num_modules', 1) == (4 if kind == 'greedy_k4' else 1)
        batch = c.train_dataloader.batch_size * gpus
        opt = c.optim_wrapper.optimizer
        assert batch == 1024 and opt.type == 'AdamW' and opt.lr == pytest.approx(5e-4 * batch / 512)
        assert opt.weight_decay == 0.05
        warmup, cosine = c.param_scheduler
        assert (warmup.type, warmup.end, cosine.type, cosine.begin, cosine.end) == ('LinearLR', 5, 'CosineAnnealingLR',
                                                                                  5, 300)
        assert c.train_cfg.max_epochs == 300
        assert [a.type for a in c.model.train_cfg.augments] == ['Mixup', 'CutMix']
        assert [a.alpha for a in c.model.train_cfg.augments] == [0.8, 1.0]
        assert c.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
        assert 'RandAugment' in [t.type for t in c.train_dataloader.dataset.pipeline]
        assert c.val_dataloader.dataset.type == 'ImageNet'


# -- the stock-mmpretrain example ----------------------------------------------------------------
def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def test_the_mmpretrain_example_is_its_stock_base_plus_a_few_lines(tmp_path):
    lines = [ln for ln in open(EXAMPLE).read().splitlines() if ln.strip() and not ln.lstrip().startswith('#')]
    assert lines[0].startswith('_base_') and len(lines) - 1 <= 6
    cfg = Config.fromfile(EXAMPLE)
    assert lines[0] == "_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']"
    (tmp_path / 'stock.py').write_text(lines[0] + '\n')  # the stock config alone, read the same way
    stock = Config.fromfile(str(tmp_path / 'stock.py'))
    mine, theirs = _flat(cfg.to_dict()), _flat(stock.to_dict())
    changed = {k for k in set(mine) | set(theirs) if mine.get(k, None) != theirs.get(k, None)}
    allowed = ('custom_imports.', 'model.type', 'model.backbone.', 'model.split.', 'model.local_objective.')
    assert changed and all(k.startswith(allowed) for k in changed), sorted(changed)
    assert mine['model.backbone.model_name'] == 'resnet50' and mine['model.split.num_modules'] == 4


def make_imagenet_layout(root: str, classes: int = 3, train_per_class: int = 2, val: int = 4, size: int = 40) -> str:
    """A tiny ImageNet in mmpretrain's layout: train/<class>/*.png, val/*.png, meta/{train,val}.txt."""
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'meta'))
    train_lines, val_lines = [], []
    for c in range(classes):
        os.makedirs(osp.join(root, 'train', f'n{c:08d}'))
        for i in range(train_per_class):
            name = f'n{c:08d}/img_{i}.png'
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(osp.join(root, 'train', name))
            train_lines.append(f'{name} {c}')
    os.makedirs(osp.join(root, 'val'))
    for i in range(val):
        name = f'val_{i}.png'
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(osp.join(root, 'val', name))
        val_lines.append(f'{name} {i % classes}')
    for split, lines in (('train', train_lines), ('val', val_lines)):
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


@pytest.mark.slow  # a tools/train.py process: ~20 s
def test_the_mmpretrain_example_trains_and_evaluates_with_tools_train(tmp_path):
    data = make_imagenet_layout(str(tmp_path / 'imagenet'))
    work = tmp_path / 'work'
    size = 32
    options = [f'{s}_dataloader.{k}' for s in ('train', 'val') for k in
               (f'dataset.data_root={data}', 'batch_size=2', 'num_workers=0', 'persistent_workers=False')]
    options += [f'train_dataloader.dataset.pipeline.1.scale={size}', f'val_dataloader.dataset.pipeline.1.scale={size}',
                f'val_dataloader.dataset.pipeline.2.crop_size={size}', f'model.split.input_size=(3,{size},{size})',
                'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), EXAMPLE, '--work-dir', str(work), '--cfg-options',
           *options]
    run = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    scalars = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    assert scalars, os.listdir(work)
    records = [json.loads(line) for line in open(scalars[0])]
    train = [r for r in records if 'loss' in r]
    assert len(train) == 3 and all(np.isfinite(r['loss']) for r in train)  # 6 images / batch 2
    assert any(k.startswith('m2.') for k in train[0])  # the third local module's loss: K=4
    val = [r for r in records if 'accuracy/top1' in r]
    assert len(val) == 1 and 0 <= val[0]['accuracy/top1'] <= 100
    assert (work / 'epoch_1.pth').exists()


def test_cifar_recipe_is_the_papers():
    """Reflect padding, the papers' mean / std, and their per-epoch learning rate (train.py
    --cos_lr: a warm-up from 0.01 over 10 epochs blended into a 160-epoch cosine from 0.8)."""
    import math

    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cls', 'cifar_resnet32_e2e.py'))
    crop = cfg.train_pipeline[0]
    assert (crop.type, crop.padding, crop.padding_mode) == ('RandomCrop', 4, 'reflect')
    assert cfg.data_preprocessor.std == [63.0, 62.1, 66.7] and cfg.data_preprocessor.mean == [125.3, 123.0, 113.9]
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=cfg.optim_wrapper.optimizer.lr)
    scheds = [PARAM_SCHEDULERS.build(dict(c, optimizer=opt)) for c in cfg.param_scheduler]
    for epoch in range(1, cfg.train_cfg.max_epochs + 1):
        cos = 0.5 * 0.8 * (1 + math.cos(math.pi * epoch / 160))
        paper = cos * (epoch - 1) / 10 + 0.01 * (11 - epoch) / 10 if epoch <= 10 else cos
        assert abs(opt.param_groups[0]['lr'] - paper) < 0.008, epoch
        for s in scheds:
            s.step()
