"""The torch-side parts of the GPU check, one per process (``gpu_check.py`` runs them).

    python tools/analysis/gpu_check_parts.py device|cls_stack|amp --result FILE
        [--device cuda|cpu] [--tiny] [--task cls|seg|det] [--site DIR]

Each writes ``{status, figures, notes}`` to FILE. A check that does not hold raises: the process
exits non-zero and its traceback is in the check's log.

- ``device``: versions, the GPU, which optional packages import.
- ``cls_stack``: the classification stack imports (mmengine, mmcv, mmpretrain, then
  ``localvision.cls``; with ``--site``, where each came from: the carried wheels extracted there
  or the device's own install), mmcv with or without its compiled ops, cv2 real or the stub; a
  ResNet-20 ``LocalImageClassifier`` (K=2, InfoPro) built through mmpretrain's ``MODELS`` trains one
  step on a batch of mmpretrain ``DataSample``s; mmseg is not imported (mmdet only by mmpretrain's
  own optional import, where it is installed).
- ``amp``: fp32, fp16 (``AmpOptimWrapper``, dynamic loss scaling) and bf16 training steps through
  ``PerModuleBackward`` (cls: ResNet-110 K=4, batch 128; seg / det: the demo configs): losses
  finite, every unit's parameters changed, unit 0 runs in the autocast dtype; peak memory
  and time per step (CPU: fp32 only, tiny sizes; ``AmpOptimWrapper`` needs CUDA).
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402

from gpu_check import CLS_MODELS, CLS_STACK, OPENMMLAB, cls_config  # noqa: E402  (standard library only)

MODULES = ('mmengine', 'timm', 'torchvision', 'numpy', 'matplotlib', 'pytest', 'cv2') + OPENMMLAB
DISTRIBUTIONS = ('torch', 'torchvision', 'timm', 'numpy', 'mmengine', 'matplotlib', 'pytest', 'mmcv', 'mmcv-lite',
                 'mmsegmentation', 'mmdet', 'mmpretrain', 'opencv-python', 'opencv-python-headless')
TASK_CONFIGS = {'seg': 'configs/seg/deeplab_infopro_k4_demo.py', 'det': 'configs/det/retinanet_r18_infopro_k2_demo.py'}


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def part_device(args) -> dict:
    versions = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    versions.update(python=platform.python_version(), torch_cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    figures = dict(versions=versions, importable={m: importable(m) for m in MODULES}, machine=platform.machine(),
                   cpu_count=os.cpu_count(), cuda_available=torch.cuda.is_available(),
                   device_count=torch.cuda.device_count())
    if figures['cuda_available']:
        props = torch.cuda.get_device_properties(0)
        x = torch.randn(1024, 1024, device='cuda')
        figures.update(name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                       total_memory_gib=round(props.total_memory / 2**30, 1),
                       bf16_supported=torch.cuda.is_bf16_supported(),
                       matmul_ok=bool(torch.isfinite(x @ x).all().item()))
        try:
            smi = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                 capture_output=True, text=True, timeout=20)
            figures['driver'] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            figures['driver'] = None
    return dict(figures=figures)


# -- building and training ------------------------------------------------------------------------

def build_cls(model: str, num_modules: int, tiny: bool, **overrides):
    """A ``LocalImageClassifier`` of ``gpu_check.CLS_MODELS[model]`` built through mmpretrain's
    ``MODELS`` (what ``custom_imports=['localvision.cls']`` registers); returns it and its config."""
    import localvision.cls  # noqa: F401  (registers LocalImageClassifier in mmpretrain's MODELS)
    import localvision.engine  # noqa: F401  (executors)
    from mmpretrain.registry import MODELS
    cfg = cls_config(**dict(CLS_MODELS[model][1 if tiny else 0], num_modules=num_modules, **overrides))
    torch.manual_seed(0)
    return MODELS.build(cfg['model']), cfg


def build_task(task: str, tiny: bool) -> Tuple[torch.nn.Module, dict, dict, List[str]]:
    """Model, synthetic batch, optimizer config and notes of ``task``'s check."""
    from benchmark_memory import synthetic_cls_batch, synthetic_det_batch, synthetic_seg_batch
    if task == 'cls':
        model, cfg = build_cls('resnet110', 4, tiny)
        batch = synthetic_cls_batch(8 if tiny else 128, (3, 32, 32), 10)
        return model, batch, cfg['optim_wrapper']['optimizer'], [
            f"{cfg['model']['backbone']['model_name']} at K=4 (balanced, Greedy ConvFCHead), SGD lr 0.1"]
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, TASK_CONFIGS[task]))  # its custom_imports: localvision.seg / .det
    init_default_scope(cfg.get('default_scope', 'localvision'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    size = tuple(cfg.model.split.input_size)
    bs = 2 if tiny else cfg.train_dataloader.batch_size
    if task == 'seg':
        batch = synthetic_seg_batch(bs, size, cfg.model.decode_head.num_classes)
    else:
        batch = synthetic_det_batch(bs, size, cfg.model.bbox_head.num_classes)
    return model, batch, cfg.optim_wrapper.optimizer, [f'{TASK_CONFIGS[task]}, batch {bs}, input {size}']


def unit_vectors(model) -> List[torch.Tensor]:
    """Each unit's parameters as one flat CPU vector."""
    return [torch.cat([p.detach().float().flatten().cpu() for p in model.unit_parameters(k)])
            for k in range(model.num_units)]


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def train_and_check(model, optim_wrapper, batch: dict, device: torch.device, steps: int) -> dict:
    """A warm-up step, one step measured for peak memory, ``steps`` timed steps; checks that the
    losses are finite and that every unit's parameters changed."""
    from localvision.utils.memory import measure_peak_memory
    before = unit_vectors(model)
    first = model.train_step(copy.deepcopy(batch), optim_wrapper)
    peak = measure_peak_memory(lambda: model.train_step(copy.deepcopy(batch), optim_wrapper), device=device,
                               baseline=(model, optim_wrapper.optimizer))
    times, last = [], first
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        last = model.train_step(copy.deepcopy(batch), optim_wrapper)
        sync(device)
        times.append(time.perf_counter() - t0)
    bad = {k: float(v) for k, v in last.items() if not torch.isfinite(v.detach()).all()}
    assert not bad, f'non-finite losses after {steps + 2} steps: {bad}'
    unchanged = [k for k, (b, a) in enumerate(zip(before, unit_vectors(model))) if torch.equal(b, a)]
    assert not unchanged, f'units {unchanged} of {model.num_units} kept their parameters'
    return dict(peak_mib=round(peak / 2**20, 1), ms_per_iter=round(1000 * statistics.median(times), 2),
                loss_first=round(float(first['loss']), 4), loss_last=round(float(last['loss']), 4),
                units_changed=f'{model.num_units}/{model.num_units}')


def unit0_dtype(model, optim_wrapper, batch: dict) -> str:
    """The dtype of unit 0's output under the wrapper's ``optim_context`` (autocast with AMP)."""
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        ctx = model.make_context(data['inputs'], data['data_samples'])
        with optim_wrapper.optim_context(model):
            out, _ = model.forward_unit(0, ctx.inputs, ctx)
    return str(out.dtype).replace('torch.', '')


def module_origin(name: str, site: str) -> dict:
    """Version and file of an imported module, and whether it came from the carried wheels."""
    mod = sys.modules[name]
    path = osp.abspath(getattr(mod, '__file__', None) or '')
    carried = bool(site) and path.startswith(osp.abspath(site) + os.sep)
    origin = 'carried wheel' if carried else 'repository' if name.split('.')[0] == 'localvision' else 'device'
    return dict(version=getattr(mod, '__version__', None), file=path, origin=origin)


def part_cls_stack(args) -> dict:
    import importlib
    figures: dict = dict(imports={})
    for name in CLS_STACK:
        importlib.import_module(name)
        figures['imports'][name] = module_origin(name, args.site)
    import cv2
    import mmcv
    import mmpretrain.structures  # noqa: F401
    from mmengine.optim import OptimWrapper
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    import localvision.cls
    from benchmark_memory import synthetic_cls_batch
    figures['imports']['localvision.cls'] = module_origin('localvision.cls', args.site)
    assert MMPRETRAIN_MODELS.get('LocalImageClassifier') is localvision.cls.LocalImageClassifier, \
        "LocalImageClassifier is not registered in mmpretrain's MODELS"
    figures.update(mmcv_ops=importable('mmcv._ext'), cv2='stub' if getattr(cv2, '__lv_stub__', False) else
                   getattr(cv2, '__version__', '?'), mmcv_file=osp.dirname(mmcv.__file__))
    device = torch.device(args.device)
    model, cfg = build_cls('resnet110', 2, True, objective=dict(type='InfoPro', lambda_recon=(5, 1),
                                                                 lambda_task=(1, 1)))
    model.to(device)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    figures.update(train_and_check(model, ow, synthetic_cls_batch(8, (3, 32, 32), 10), device, steps=1))
    loaded = sorted({m.split('.')[0] for m in sys.modules} & set(OPENMMLAB))
    # mmpretrain itself tries ``from mmdet.models.backbones import ResNet`` (res_layer_extra_norm.py)
    unexpected = set(loaded) - {'mmcv', 'mmpretrain'} - ({'mmdet'} if importable('mmdet') else set())
    assert not unexpected, f'the classification path imported {loaded}'
    figures.update(device=str(device), model=type(model).__name__, registry=type(model).__module__,
                   data_sample=type(synthetic_cls_batch(1, (3, 8, 8), 2)['data_samples'][0]).__module__,
                   split=model.backbone.describe(), objectives=[type(o).__name__ for o in model.objectives],
                   openmmlab_imported=loaded)
    notes = []
    if args.site:
        carried = [n for n, v in figures['imports'].items() if v['origin'] == 'carried wheel']
        notes.append(f"from the carried wheels: {', '.join(carried) or 'none (all on the device)'}")
    if not figures['mmcv_ops']:
        notes.append('mmcv without its compiled ops (mmcv-lite): nothing on the classification path uses mmcv.ops')
    return dict(figures=figures, notes=notes)


def part_amp(args) -> dict:
    from mmengine.optim import build_optim_wrapper
    device = torch.device(args.device)
    base, batch, optimizer, notes = build_task(args.task, args.tiny)
    precisions = {'fp32': dict(type='OptimWrapper'),
                  'fp16': dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic'),
                  'bf16': dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')}
    figures: Dict[str, dict] = dict(split=base.backbone.describe(), executor=type(base.executor).__name__)
    for name, wrapper in precisions.items():
        if name != 'fp32' and device.type != 'cuda':
            figures[name] = dict(skipped="mmengine's AmpOptimWrapper needs CUDA")
            continue
        if name == 'bf16' and not torch.cuda.is_bf16_supported():
            figures[name] = dict(skipped='this GPU has no bf16')
            continue
        model = copy.deepcopy(base).to(device)
        ow = build_optim_wrapper(model, dict(wrapper, optimizer=optimizer))
        res = train_and_check(model, ow, batch, device, steps=2 if args.tiny else 5)
        if hasattr(ow, 'loss_scaler'):
            res['loss_scale'] = float(ow.loss_scaler.get_scale())
        try:
            res['unit0_output_dtype'] = unit0_dtype(model, ow, batch)
        except Exception as e:  # the dtype is a side check; the steps above are the part's result
            res['unit0_output_dtype'] = f'not measured: {type(e).__name__}: {e}'
        if name != 'fp32':
            want, got = {'fp16': 'float16', 'bf16': 'bfloat16'}[name], res['unit0_output_dtype']
            assert got == want or got.startswith('not measured'), f'{name}: unit 0 ran in {got}: autocast is off'
            ref = figures['fp32']
            res.update(memory_vs_fp32=round(res['peak_mib'] / ref['peak_mib'], 3),
                       time_vs_fp32=round(res['ms_per_iter'] / ref['ms_per_iter'], 3))
        figures[name] = res
        del model, ow
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return dict(figures=figures, notes=notes)


PARTS = {'device': part_device, 'cls_stack': part_cls_stack, 'amp': part_amp}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('part', choices=sorted(PARTS))
    p.add_argument('--result', required=True, help='the JSON file to write')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--tiny', action='store_true', help='small models and batches (the CPU dry run)')
    p.add_argument('--task', default='cls', choices=['cls', 'seg', 'det'])
    p.add_argument('--site', default='', help='cls_stack: the folder the carried wheels were extracted into')
    args = p.parse_args(argv)
    result = PARTS[args.part](args)
    result.setdefault('status', 'ok')
    with open(args.result, 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result)[:2000])


if __name__ == '__main__':
    main()
