"""How much of a classification set's label simple features give away, before ranking methods on it.

    python tools/analysis/calibrate_benchmark.py [--data-root data/lv_forms_cls]
        [--config configs/cls/cifar_resnet32_shapes_greedy_k4.py] [--init-seeds 0 1 2]
        [--all-modules] [--max-train 0] [--max-val 0] [--out FILE.json]

A benchmark on which early information collapse should cost accuracy must not be solvable from
what an untrained first module already shows. This fits linear probes (multinomial logistic
regression on standardised features, torch L-BFGS, an L2 penalty; the recipe of
``learning_quality.py``'s per-module probes) on the training split and reports their top-1 on the
validation split, against chance, for these features of each image:

- ``pixels``: the raw image (C x H x W values, normalised with the config's mean / std);
- ``pixels_8x8``: the image average-pooled to 8 x 8;
- ``colour_hist``: nuisance statistics: a joint 4 x 4 x 4 RGB histogram, the per-channel mean and
  std, and the mean intensity;
- ``random_m<k>_s<seed>``: the output of module k of the config's backbone, *randomly initialised*
  (``torch.manual_seed(seed)`` then the model's own initialisation, in eval mode), at the config's
  split (module 0 unless ``--all-modules``), average-pooled to a 2 x 2 grid, as
  ``learning_quality.py`` probes trained modules;
- ``head_m0_s<seed>`` (unless ``--head-epochs 0``): not linear: the auxiliary head of the config's
  local objective (``ConvFCHead`` for greedy: conv-BN-ReLU, global pool, MLP), trained with Adam on
  the frozen random module 0's full output map. This is what greedy training's module-0 loss can
  reach before module 0 learns anything: on a set where it is high, greedy needs nothing beyond
  module 0's neighbourhood.

Every probe is fit with three L2 weights (1e-4, 1e-3, 1e-2) and the best validation top-1 is also
reported: picking it on the validation split flatters the probe, which is the safe direction for
a "near chance" claim. If the set's ``meta.json`` lists ``factors`` (the relational set does), the
accuracy of the predicted class on each factor is reported too. Results go to ``--out`` as JSON.

The images are read directly from the ImageFolder layout (``<root>/<split>/<class>/*.png``); the
model is built from the config with ``model.head.num_classes`` set to the number of class folders.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from localvision.utils.config import model_config  # noqa: E402
from localvision.utils.probes import fit_linear_probe  # noqa: E402

DEFAULT_CONFIG = 'configs/cls/cifar_resnet32_shapes_greedy_k4.py'
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-root', default='data/lv_forms_cls', help='ImageFolder root (default: %(default)s)')
    p.add_argument('--config', default=DEFAULT_CONFIG,
                   help='config whose backbone, split and normalisation are used (default: %(default)s)')
    p.add_argument('--init-seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='seeds of the random initialisations probed (default: %(default)s)')
    p.add_argument('--all-modules', action='store_true', help='probe every module of the random net, not only module 0')
    p.add_argument('--max-train', type=int, default=0, help='use the first N training images per class (0: all)')
    p.add_argument('--max-val', type=int, default=0, help='use the first N validation images per class (0: all)')
    p.add_argument('--steps', type=int, default=200, help='L-BFGS iterations per probe (default: %(default)s)')
    p.add_argument('--head-epochs', type=int, default=20,
                   help='epochs of the auxiliary-head probe on random module 0 (0: skip; default: %(default)s)')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default: %(default)s)')
    p.add_argument('--out', default=None,
                   help='JSON output (default: work_dirs/calibrate_benchmark/<data-root name>.json)')
    return p.parse_args(argv)


# --- data ---------------------------------------------------------------------------------------

def load_split(root: str, split: str, per_class: int = 0) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """``(images uint8 N x H x W x 3 RGB, labels, class names)`` of an ImageFolder split."""
    from PIL import Image
    folder = osp.join(root, split)
    if not osp.isdir(folder):
        raise SystemExit(f'error: {folder} is not a folder (ImageFolder layout: <root>/{split}/<class>/<image>)')
    classes = sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d)))
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(f for f in os.listdir(osp.join(folder, name)) if not f.startswith('.'))
        if per_class:
            files = files[:per_class]
        for f in files:
            with Image.open(osp.join(folder, name, f)) as im:
                images.append(np.asarray(im.convert('RGB')))
            labels.append(c)
    return np.stack(images), np.asarray(labels), classes


def colour_hist_features(images: np.ndarray, bins: int = 4) -> torch.Tensor:
    """Joint RGB histogram (``bins``^3, fractions), per-channel mean and std, mean intensity."""
    n = len(images)
    x = images.reshape(n, -1, 3).astype(np.int64)
    q = x * bins // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.stack([np.bincount(c, minlength=bins ** 3) for c in codes]).astype(np.float64) / x.shape[1]
    xf = x.astype(np.float64)
    stats = np.concatenate([xf.mean(1), xf.std(1), xf.mean((1, 2))[:, None]], 1)
    return torch.from_numpy(np.concatenate([hist, stats], 1)).float()


# --- probes -------------------------------------------------------------------------------------

def factor_accuracy(pred: torch.Tensor, y: torch.Tensor, classes: List[str],
                    factors: Optional[Dict[str, List[str]]]) -> Optional[Dict[str, float]]:
    """Top-1 (%) of the predicted class on each factor, for class names ``<f1>_<f2>_...``."""
    if not factors:
        return None
    parts = [c.split('_') for c in classes]
    if any(len(p) != len(factors) for p in parts):
        return None
    out = {}
    for j, name in enumerate(factors):
        value = torch.tensor([factors[name].index(p[j]) if p[j] in factors[name] else -1 for p in parts])
        out[name] = float((value[pred] == value[y]).float().mean() * 100)
    return out


def probe(name: str, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor, y_va: torch.Tensor,
          classes: List[str], factors, steps: int) -> dict:
    num_classes = len(classes)
    by_wd, train_by_wd, preds = {}, {}, {}
    for wd in WEIGHT_DECAYS:
        p_tr, p_va = fit_linear_probe(x_tr, y_tr, x_va, num_classes, wd, steps)
        by_wd[str(wd)] = float((p_va == y_va).float().mean() * 100)
        train_by_wd[str(wd)] = float((p_tr == y_tr).float().mean() * 100)
        preds[str(wd)] = p_va
    best = max(by_wd, key=by_wd.get)
    return dict(name=name, dim=int(x_tr.shape[1]), val_top1=by_wd, train_top1=train_by_wd, best_wd=best,
                best_val_top1=by_wd[best], best_factor_top1=factor_accuracy(preds[best], y_va, classes, factors))


def head_probe(head: torch.nn.Module, m_tr: torch.Tensor, y_tr: torch.Tensor, m_va: torch.Tensor,
               y_va: torch.Tensor, epochs: int, seed: int, batch: int = 128, lr: float = 1e-3) -> dict:
    """Train ``head`` (Adam, cross-entropy, no augmentation) on frozen maps; top-1 (%) after training."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    head.train()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(y_tr), generator=g)
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                loss = F.cross_entropy(head(m_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    head.eval()
    with torch.no_grad():
        def top1(m, y):
            pred = torch.cat([head(m[i:i + 500]).argmax(1) for i in range(0, len(m), 500)])
            return float((pred == y).float().mean() * 100), pred
        train_top1, _ = top1(m_tr, y_tr)
        val_top1, pred = top1(m_va, y_va)
    return dict(train_top1=train_top1, val_top1=val_top1, pred=pred)


def build_aux_head(cfg, in_channels: int, num_classes: int) -> torch.nn.Module:
    """The config's local objective's auxiliary head (``ConvFCHead`` if it names none)."""
    from localvision.registry import AUX_HEADS
    head_cfg = dict((cfg.model.get('local_objective') or {}).get('head') or dict(type='ConvFCHead'))
    return AUX_HEADS.build(dict(head_cfg, in_channels=in_channels, num_classes=num_classes))


# --- the random network -------------------------------------------------------------------------

def build_model(config: str, num_classes: int, seed: int):
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    import importlib
    for m in (cfg.get('custom_imports') or {}).get('imports', []):
        importlib.import_module(m)
    from mmpretrain.registry import MODELS
    cfg.model.head.num_classes = num_classes
    torch.manual_seed(seed)
    model = MODELS.build(model_config(cfg))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.eval(), cfg


@torch.no_grad()
def module_features(model, images: np.ndarray, mean, std, modules: List[int], batch: int = 250,
                    keep_map0: bool = False) -> Tuple[Dict[int, torch.Tensor], Optional[torch.Tensor]]:
    """Module outputs (the modules in a row, from the image) average-pooled to 2 x 2, flattened;
    and module 0's full output map if ``keep_map0``."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out: Dict[int, List[torch.Tensor]] = {k: [] for k in modules}
    maps0: List[torch.Tensor] = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float()
        maps = model.module_outputs((x - mean) / std)
        for k in out:
            out[k].append(F.adaptive_avg_pool2d(maps[k].float(), 2).flatten(1))
        if keep_map0:
            maps0.append(maps[0].float())
    return {k: torch.cat(v) for k, v in out.items()}, (torch.cat(maps0) if keep_map0 else None)


# --- main ---------------------------------------------------------------------------------------

def run(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    im_tr, y_tr, classes = load_split(args.data_root, 'train', args.max_train)
    im_va, y_va, classes_va = load_split(args.data_root, 'val', args.max_val)
    if classes != classes_va:
        raise SystemExit(f'error: train classes {classes} differ from val classes {classes_va}')
    y_tr, y_va = torch.from_numpy(y_tr), torch.from_numpy(y_va)
    meta_path = osp.join(args.data_root, 'meta.json')
    meta = json.load(open(meta_path)) if osp.exists(meta_path) else {}
    factors = meta.get('factors')
    chance = float(torch.bincount(y_va, minlength=len(classes)).max() / len(y_va) * 100)
    print(f'{args.data_root}: {len(classes)} classes, {len(y_tr)} train / {len(y_va)} val images; '
          f'chance (majority class of val) {chance:.1f} %')

    model, cfg = build_model(args.config, len(classes), args.init_seeds[0])
    dp = cfg.get('data_preprocessor') or {}
    mean, std = dp.get('mean', [127.5] * 3), dp.get('std', [63.75] * 3)
    print(model.backbone.describe())
    num_modules = model.backbone.num_modules
    modules = list(range(num_modules)) if args.all_modules else [0]

    def norm_pixels(images, pool=None):
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1)) \
            / torch.tensor(std).view(1, 3, 1, 1)
        return (F.adaptive_avg_pool2d(x, pool) if pool else x).flatten(1)

    features = [('pixels', norm_pixels(im_tr), norm_pixels(im_va)),
                ('pixels_8x8', norm_pixels(im_tr, 8), norm_pixels(im_va, 8)),
                ('colour_hist', colour_hist_features(im_tr), colour_hist_features(im_va))]
    results = []
    for name, f_tr, f_va in features:
        results.append(probe(name, f_tr, y_tr, f_va, y_va, classes, factors, args.steps))
        _print_row(results[-1])
    for seed in args.init_seeds:
        if seed != args.init_seeds[0]:
            model, _ = build_model(args.config, len(classes), seed)
        keep = args.head_epochs > 0
        f_tr, m_tr = module_features(model, im_tr, mean, std, modules, keep_map0=keep)
        f_va, m_va = module_features(model, im_va, mean, std, modules, keep_map0=keep)
        for k in modules:
            results.append(dict(probe(f'random_m{k}_s{seed}', f_tr[k], y_tr, f_va[k], y_va, classes, factors,
                                      args.steps), module=k, init_seed=seed))
            _print_row(results[-1])
        if keep:
            torch.manual_seed(seed)
            head = build_aux_head(cfg, m_tr.shape[1], len(classes))
            r = head_probe(head, m_tr, y_tr, m_va, y_va, args.head_epochs, seed)
            pred = r.pop('pred')
            results.append(dict(name=f'head_m0_s{seed}', head=type(head).__name__, epochs=args.head_epochs,
                                module=0, init_seed=seed, kind='aux_head', **r,
                                factor_top1=factor_accuracy(pred, y_va, classes, factors)))
            del m_tr, m_va
            fac = results[-1]['factor_top1']
            fac = ('  factors ' + ' '.join(f'{k} {v:.1f}' for k, v in fac.items())) if fac else ''
            print(f"{results[-1]['name']:<16} {type(head).__name__} on frozen module 0, {args.head_epochs} epochs: "
                  f"val top-1 {r['val_top1']:5.1f} (train {r['train_top1']:.1f}){fac}", flush=True)
    summary = {}
    for k in modules:
        vals = [r['best_val_top1'] for r in results if r.get('module') == k and 'best_val_top1' in r]
        summary[f'random_m{k}_mean_best_val_top1'] = float(np.mean(vals))
    heads = [r['val_top1'] for r in results if r.get('kind') == 'aux_head']
    if heads:
        summary['head_m0_mean_val_top1'] = float(np.mean(heads))
    out = dict(data_root=args.data_root, config=args.config, split=model.backbone.describe(),
               classes=classes, factors=factors, n_train=len(y_tr), n_val=len(y_va), chance_top1=chance,
               weight_decays=list(WEIGHT_DECAYS), probes=results, summary=summary,
               seconds=round(time.perf_counter() - t0, 1))
    path = args.out or osp.join('work_dirs', 'calibrate_benchmark',
                                f'{osp.basename(osp.normpath(args.data_root))}.json')
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(out, f, indent=2)
        f.write('\n')
    for key, v in summary.items():
        print(f'{key}: {v:.1f} % (chance {chance:.1f} %)')
    print(f'written {path} ({out["seconds"]} s)')
    return out


def _print_row(r: dict) -> None:
    wds = '  '.join(f'{float(wd):g}: {v:5.1f}' for wd, v in r['val_top1'].items())
    fac = r.get('best_factor_top1')
    fac = ('  factors ' + ' '.join(f'{k} {v:.1f}' for k, v in fac.items())) if fac else ''
    print(f"{r['name']:<16} dim {r['dim']:>5}  val top-1 by L2 weight {wds}  "
          f"(train {r['train_top1'][r['best_wd']]:.1f}){fac}", flush=True)


if __name__ == '__main__':
    run()
