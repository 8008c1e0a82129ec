"""One-command GPU check (issue 15, item 4): one JSON of what works on a CUDA machine, and figures.

    bash tools/analysis/gpu_check.sh                           # or: make gpu-check; results in $OUT
    LV_GPU_CHECK_ALLOW_CPU=1 bash tools/analysis/gpu_check.sh  # the same parts on the CPU, tiny sizes
    python tools/analysis/gpu_check.py --fetch-wheels          # fill work_dirs/gpu_wheels (network, once)

Made for a bare machine: torch, torchvision and timm, but no OpenMMLab packages and no network.
The wheels the check needs travel with the repository in ``work_dirs/gpu_wheels`` (about 41 MiB;
``--fetch-wheels`` makes it: pure wheels once per Python version 3.10-3.12, the few binary ones
(matplotlib) per version): mmengine 0.10.7, mmpretrain 1.2.0 and its dependencies (einops, mat4py,
modelindex, model-index, ordered-set, markdown, click, importlib-metadata, zipp, lazy-importer),
matplotlib for the plots, pytest, setuptools < 81 (``pkg_resources``, for mmengine's ``mmpretrain::``
config bases; extracted only where it does not import); and mmcv 2.1.0, which has no pure wheel on PyPI: ``--fetch-wheels``
builds one from its sdist (sha256 checked) with ``MMCV_WITH_OPS=0`` (``mmcv_lite-2.1.0-py2.py3-none-any``,
checked to hold no compiled extension; nothing on the classification path uses ``mmcv.ops``).
opencv is not carried (60 MB): mmengine and mmcv import ``cv2`` at module level (``from cv2 import
IMREAD_COLOR, ...``) but nothing on the synthetic-batch paths calls it, so where cv2 is absent a stub
stands in for it (constants are ints, calls raise; said in the JSON).

Parts, in this order (the most valuable figures first), each in its own process with a timeout (a
part that fails, times out or is skipped never stops the others), within one time budget
(``--budget-s``, default 360 s; ``gpu_check.sh`` kills the driver 15 s after it):

1. ``install_wheels``: extract the wheels the device lacks into ``work_dirs/gpu_check_env/site``
   (put on ``PYTHONPATH`` with the repository; nothing is installed into the device's Python);
   ``device``: versions, GPU, which optional packages import;
2. ``cls_stack``: the classification stack (mmengine, mmcv, mmpretrain, ``localvision.cls``)
   imports, from the carried wheels where the device lacks them (the JSON says where each came
   from), and a small ``LocalImageClassifier`` (K=2, InfoPro) built through mmpretrain's ``MODELS``
   trains one step on mmpretrain ``DataSample``s;
3. ``benchmark_resnet101`` / ``benchmark_deit_s``: ``benchmark_memory.py`` on ResNet-101 and
   DeiT-S (``deit_small_patch16_224``) at 224x224, batch 32: E2E vs K=2 vs K=4 (InfoPro with the
   papers' ImageNet aux nets ``ConvPoolHead`` and ``ProgressiveDecoder``,
   ``balanced`` split; and K=4 with the ``equal`` split for context) side by side,
   ``torch.cuda.max_memory_allocated``;
4. ``benchmark_resnet110`` / ``benchmark_vit_s16``: E2E vs K=4 with and without activation
   checkpointing (CIFAR ResNet-110 batch 128; ViT-S/16 224x224 batch 64);
   every benchmark is followed, where the part's time allows, by a memory-only rerun (one model
   at a time) that checks the side-by-side peaks;
5. ``amp_cls`` / ``amp_seg`` / ``amp_det``: fp32, fp16 (loss scaling) and bf16 training steps
   through ``AmpOptimWrapper`` and ``PerModuleBackward`` (K=4 ResNet-110 for classification; the
   seg and det demo models where mmseg and mmdet import);
6. ``pytest_gpu``: the ``gpu``-marked tests (``pytest -m gpu``), but the module-parallel one;
7. ``pipeline_cuda``: ``tests/engine/test_pipeline_cuda.py`` (module-parallel training on CUDA;
   the CPU dry run runs its CPU cases; skipped where cv2 is the stub: it reads images from a folder).

The benchmarks' models are mmpretrain configs written by :func:`cls_config` (``CLS_MODELS``) into
``work_dirs/gpu_check_env/configs``. Writes ``$OUT/gpu_check.json`` (rewritten after every part, so
a kill leaves the parts done so far), ``$OUT/gpu_check.log`` (every child's output), the
benchmarks' JSON and PNG under ``$OUT/benchmark_*`` and the tests' JUnit XML. Standard library
only: what needs torch runs in child processes (``gpu_check_parts.py``, ``benchmark_memory.py``,
pytest).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from typing import Callable, Dict, List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PARTS_SCRIPT = osp.join(ROOT, 'tools', 'analysis', 'gpu_check_parts.py')
BENCHMARK_SCRIPT = osp.join(ROOT, 'tools', 'analysis', 'benchmark_memory.py')
WHEELS_DIR = osp.join(ROOT, 'work_dirs', 'gpu_wheels')
ENV_DIR = osp.join(ROOT, 'work_dirs', 'gpu_check_env')

# What the check needs beyond torch/torchvision/timm (numpy and pillow come with torchvision, pyyaml
# with timm). Pure wheels serve every Python version; the binary ones are fetched per version.
PURE_WHEELS = (
    'mmengine==0.10.7', 'addict', 'termcolor', 'yapf', 'platformdirs', 'tomli',  # mmengine
    'rich', 'markdown-it-py', 'mdurl', 'pygments',  # mmengine's logging
    'mmpretrain==1.2.0', 'einops', 'mat4py', 'modelindex', 'model-index', 'ordered-set', 'markdown', 'click',
    'importlib-metadata', 'zipp',  # mmpretrain (localvision.cls)
    'fonttools', 'cycler', 'pyparsing', 'python-dateutil', 'six', 'packaging',  # matplotlib
    'pytest', 'pluggy', 'iniconfig', 'exceptiongroup', 'typing_extensions',  # pytest
    # mmengine 0.10.7 reads `mmpretrain::` config bases through pkg_resources, which setuptools 81
    # and later no longer ship (a bare Python 3.12 venv may have none at all): extracted only where
    # `pkg_resources` does not import
    'setuptools<81',
)
BINARY_WHEELS = ('matplotlib', 'contourpy', 'kiwisolver')
# pure wheels only some Python versions need (importlib-metadata >= 10, for Python >= 3.11 only, needs it)
PURE_WHEELS_FROM = {'lazy-importer': '3.11'}
# mmcv has no pure wheel on PyPI: built here from its sdist without the compiled ops
# (MMCV_WITH_OPS=0 names it mmcv-lite; same `mmcv` package, nothing on the classification path
# needs mmcv.ops). One wheel for every Python version.
MMCV_SDIST = 'mmcv==2.1.0'
MMCV_SDIST_SHA256 = 'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f'
COMPILED_SUFFIXES = ('.so', '.pyd', '.dylib', '.dll')
PYTHON_VERSIONS = ('3.10', '3.11', '3.12')
MANYLINUX_X86_64 = ('manylinux2014_x86_64', 'manylinux_2_17_x86_64', 'manylinux_2_28_x86_64')
WHEELS_BUDGET_BYTES = 48 * 2**20
OPENMMLAB = ('mmcv', 'mmseg', 'mmdet', 'mmpretrain')
# what the classification stack imports, and from where it should come on a bare machine
CLS_STACK = ('mmengine', 'mmcv', 'mmpretrain')

MIN_PART_S = 10  # a part is not started with less time than this left in the budget
CPU_TIMEOUT_SCALE = 3  # the CPU dry run: tiny sizes, but a slow (or shared) CPU


class PartSkipped(Exception):
    """A part that cannot run here; the message says why."""


class PartFailed(Exception):
    """A part that ran and failed; the message holds the last lines of its output."""


# ---------------------------------------------------------------------------------------------
# wheels: fetched here (network), extracted there (no network, no pip needed)
# ---------------------------------------------------------------------------------------------

def compiled_members(path: str) -> List[str]:
    """The compiled extension modules (.so, .pyd...) inside a wheel."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if n.endswith(COMPILED_SUFFIXES) or '.so.' in osp.basename(n)]


def build_mmcv_lite(wheels_dir: str) -> str:
    """mmcv's sdist (``MMCV_SDIST``, its sha256 checked) built into a pure wheel with
    ``MMCV_WITH_OPS=0`` (``mmcv_lite-...-py2.py3-none-any.whl``); fails if it holds a compiled
    extension. Built with this Python's setuptools (mmcv's setup.py needs ``pkg_resources``:
    setuptools < 81) and ``SOURCE_DATE_EPOCH`` fixed, so a rebuild gives the same files."""
    import hashlib
    with tempfile.TemporaryDirectory() as tmp:
        # the sdist's metadata is generated as 'mmcv' (without MMCV_WITH_OPS=0): download only
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary=:all:',
                        '--no-build-isolation', '--quiet', '-d', tmp, MMCV_SDIST], check=True)
        sdist = [osp.join(tmp, n) for n in os.listdir(tmp) if n.endswith(('.tar.gz', '.zip'))][0]
        with open(sdist, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != MMCV_SDIST_SHA256:
            raise RuntimeError(f'{osp.basename(sdist)}: sha256 {digest}, expected {MMCV_SDIST_SHA256}')
        env = dict(os.environ, MMCV_WITH_OPS='0', SOURCE_DATE_EPOCH='1700000000')
        out = osp.join(tmp, 'wheel')
        subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet',
                        '-w', out, sdist], check=True, env=env)
        name = os.listdir(out)[0]
        compiled = compiled_members(osp.join(out, name))
        if compiled or not name.endswith('-none-any.whl'):
            raise RuntimeError(f'{name} is not pure: {compiled[:5]}')
        shutil.move(osp.join(out, name), osp.join(wheels_dir, name))
    return name


def pure_extra(version: str) -> List[str]:
    """The wheels of ``PURE_WHEELS_FROM`` that Python ``version`` needs."""
    minor = int(version.split('.')[1])
    return [w for w, v in PURE_WHEELS_FROM.items() if minor >= int(v.split('.')[1])]


def fetch_wheels(wheels_dir: str, python_versions=PYTHON_VERSIONS) -> dict:
    """``pip download`` the check's wheels for each Python version into one flat folder, build
    the mmcv-lite wheel, and write a ``manifest.json`` naming each version's files (pip resolved
    them for that version)."""
    os.makedirs(wheels_dir, exist_ok=True)
    manifest: Dict[str, List[str]] = {}
    pip = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--quiet']
    for version in python_versions:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(pip + ['--python-version', version, '--implementation', 'py', '--abi', 'none',
                                  '--platform', 'any', '-d', tmp, *PURE_WHEELS, *pure_extra(version)], check=True)
            platforms = [a for p in MANYLINUX_X86_64 for a in ('--platform', p)]
            subprocess.run(pip + ['--python-version', version, *platforms, '-d', tmp, *BINARY_WHEELS], check=True)
            names = sorted(os.listdir(tmp))
            for name in names:
                if not osp.exists(osp.join(wheels_dir, name)):
                    shutil.move(osp.join(tmp, name), osp.join(wheels_dir, name))
        manifest[version] = names
    mmcv = build_mmcv_lite(wheels_dir)
    for names in manifest.values():
        names.append(mmcv)
        names.sort()
    keep = {n for names in manifest.values() for n in names}
    for name in os.listdir(wheels_dir):  # files of an earlier fetch that no version uses now
        if name.endswith('.whl') and name not in keep:
            os.remove(osp.join(wheels_dir, name))
    total = sum(osp.getsize(osp.join(wheels_dir, n)) for n in keep)
    info = dict(python_versions=manifest, total_bytes=total, pure=list(PURE_WHEELS), pure_from=PURE_WHEELS_FROM,
                binary=list(BINARY_WHEELS),
                built=dict(wheel=mmcv, sdist=MMCV_SDIST, sdist_sha256=MMCV_SDIST_SHA256,
                           env=dict(MMCV_WITH_OPS='0', SOURCE_DATE_EPOCH='1700000000'), compiled_members=[]),
                fetched=datetime.datetime.now().isoformat(timespec='seconds'))
    with open(osp.join(wheels_dir, 'manifest.json'), 'w') as f:
        json.dump(info, f, indent=1)
    print(f'{len(keep)} wheels, {total / 2**20:.1f} MiB in {wheels_dir}')
    if total > WHEELS_BUDGET_BYTES:
        print(f'warning: more than {WHEELS_BUDGET_BYTES / 2**20:.0f} MiB')
    return info


def wheel_tags(filename: str):
    """(project, python tags, abi tags, platform tags) of a wheel file name."""
    parts = filename[:-len('.whl')].split('-')
    return parts[0].lower(), parts[-3].split('.'), parts[-2].split('.'), parts[-1].split('.')


def wheel_fits(filename: str, py: str, machine: str) -> bool:
    """Whether a wheel can be used by CPython ``py`` ('3.11') on ``machine`` ('x86_64')."""
    _, pys, abis, plats = wheel_tags(filename)
    cp = 'cp' + py.replace('.', '')
    if 'any' not in plats and not any(p.endswith('_' + machine) and 'linux' in p for p in plats):
        return False
    if 'abi3' in abis:
        return any(t.startswith('cp') and int(t[2:]) <= int(cp[2:]) for t in pys)
    return any(t in ('py3', 'py' + cp[2:], cp) for t in pys) and any(a in ('none', cp) for a in abis)


def wheel_top_levels(path: str) -> List[str]:
    """The importable top-level names a wheel installs."""
    names = set()
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            head = member.split('/')[0]
            if '.data' in head:  # NAME.data/purelib/pkg/...
                parts = member.split('/')
                head = parts[2] if len(parts) > 2 and parts[1] in ('purelib', 'platlib') else ''
            if not head or head.endswith('.dist-info') or head == '__pycache__':
                continue
            names.add(head[:-3] if head.endswith('.py') else head.split('.')[0])
    return sorted(n for n in names if n.isidentifier())


def extract_wheel(path: str, site: str) -> None:
    """Install a wheel the way pip does for these wheels: its files into ``site`` (a
    ``.data/purelib`` or ``platlib`` folder's contents too; scripts and headers are not needed)."""
    with zipfile.ZipFile(path) as z:
        for member in z.infolist():
            parts = member.filename.split('/')
            if '.data' in parts[0]:
                if len(parts) < 3 or parts[1] not in ('purelib', 'platlib'):
                    continue
                target = osp.join(site, *parts[2:])
            else:
                target = osp.join(site, *parts)
            if member.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(osp.dirname(target), exist_ok=True)
            with z.open(member) as src, open(target, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            mode = member.external_attr >> 16
            if mode & 0o111:
                os.chmod(target, 0o755)


def choose_wheels(wheels_dir: str, py: str, machine: str) -> tuple:
    """This Python's wheel files from the manifest (and a note when its version is not there:
    the pure wheels of the nearest version are used, the binary ones are left out)."""
    with open(osp.join(wheels_dir, 'manifest.json')) as f:
        versions = json.load(f)['python_versions']
    note = ''
    if py in versions:
        names = versions[py]
    else:
        nearest = min(versions, key=lambda v: abs(int(v.split('.')[1]) - int(py.split('.')[1])))
        names = [n for n in versions[nearest] if wheel_tags(n)[3] == ['any']]
        note = (f'no wheels fetched for Python {py}: the pure wheels of {nearest} are used, binary ones '
                f'(matplotlib, ...) are missing')
    fits = [n for n in names if wheel_fits(n, py, machine)]
    if len(fits) < len(names):
        note += f' {len(names) - len(fits)} wheels do not fit {machine}: ' + ', '.join(sorted(set(names) - set(fits)))
    return fits, note.strip()


CV2_STUB = '''"""Stand-in for opencv on a machine without it (written by tools/analysis/gpu_check.py).

mmengine and mmcv import cv2 at module level (mmengine.visualization / hooks; mmcv.image and
mmcv.video: ``from cv2 import IMREAD_COLOR, ...``, flag dicts such as ``cv2.INTER_LINEAR``) but
only call it to read, draw or resize images, which the GPU check never does on its synthetic
batches. Constant-like names (``IMREAD_COLOR``, ``INTER_LINEAR``, ``COLOR_BGR2RGB``) are
distinct ints; ``setNumThreads`` / ``ocl.setUseOpenCL`` do nothing; calling anything else raises.
"""
__lv_stub__ = True
__version__ = '0.0.0+gpu_check_stub'
_NOOP = ('setNumThreads', 'ocl.setUseOpenCL')
_CONSTANTS = {}


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Missing(self._name + '.' + name)

    def __call__(self, *args, **kwargs):
        if self._name in _NOOP:
            return None
        raise RuntimeError(f'cv2.{self._name}: opencv is not installed (gpu_check stub)')

    def __repr__(self):
        return f'<cv2 stub {self._name}>'


def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)
    if name[:1].isupper() and name.upper() == name:  # IMREAD_COLOR, INTER_LINEAR, CAP_PROP_FPS
        return _CONSTANTS.setdefault(name, 1000 + len(_CONSTANTS))
    return _Missing(name)
'''

BLOCKER = '''"""Make {names} unimportable, as on a machine without them (tools/analysis/gpu_check.py)."""
import sys

_BLOCKED = {names!r}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


# ---------------------------------------------------------------------------------------------
# the classification models of the check, as mmpretrain configs (localvision.cls)
# ---------------------------------------------------------------------------------------------

IMAGENET_PRE = dict(type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                    to_rgb=True)
CIFAR_PRE = dict(type='ClsDataPreprocessor', mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255],
                 to_rgb=False)
SGD = dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
ADAMW = dict(type='AdamW', lr=5e-4, weight_decay=0.05)
INFOPRO = dict(type='InfoPro', lambda_recon=(5, 1), lambda_task=(1, 1))
# at 224x224: the aux nets of the papers' ImageNet code (as configs/cls/imagenet_*_infopro_*.py)
INFOPRO_IN1K = dict(INFOPRO, head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder'))

# name: (full size, tiny size (CPU dry run)); each a cls_config(...) keyword set
CLS_MODELS = {
    'resnet110': (
        dict(model_name='cifar_resnet110', num_classes=10, input_size=(3, 32, 32), preprocessor=CIFAR_PRE,
             objective=dict(type='Greedy', head=dict(type='ConvFCHead')), optimizer=SGD),
        dict(model_name='cifar_resnet20', num_classes=10, input_size=(3, 32, 32), preprocessor=CIFAR_PRE,
             objective=dict(type='Greedy', head=dict(type='ConvFCHead')), optimizer=SGD)),
    'vit_s16': (
        dict(model_name='vit_small_patch16_224', num_classes=10, input_size=(3, 224, 224),
             backbone=dict(img_size=224, patch_size=16),
             objective=dict(type='Greedy', head=dict(type='PoolLinearHead')),
             optimizer=dict(ADAMW, lr=1e-3), clip_grad=dict(max_norm=1.0)),
        dict(model_name='vit_tiny_patch16_224', num_classes=10, input_size=(3, 32, 32),
             backbone=dict(img_size=32, patch_size=4, dynamic_img_size=True),
             objective=dict(type='Greedy', head=dict(type='PoolLinearHead')),
             optimizer=dict(ADAMW, lr=1e-3), clip_grad=dict(max_norm=1.0))),
    'resnet101': (
        dict(model_name='resnet101', num_classes=1000, input_size=(3, 224, 224), objective=INFOPRO_IN1K,
             optimizer=SGD),
        dict(model_name='resnet18', num_classes=10, input_size=(3, 64, 64), objective=INFOPRO, optimizer=SGD)),
    'deit_s': (
        dict(model_name='deit_small_patch16_224', num_classes=1000, input_size=(3, 224, 224),
             objective=INFOPRO_IN1K, optimizer=ADAMW),
        dict(model_name='deit_tiny_patch16_224', num_classes=10, input_size=(3, 32, 32),
             backbone=dict(img_size=32, patch_size=8), objective=INFOPRO, optimizer=ADAMW)),
}


def cls_config(model_name: str, num_classes: int, input_size, num_modules: int = 1, strategy: str = 'balanced',
               objective: dict = None, optimizer: dict = None, preprocessor: dict = None, backbone: dict = None,
               clip_grad: dict = None, executor: str = 'PerModuleBackward', batch_size: int = 32) -> dict:
    """An mmpretrain config (``default_scope='mmpretrain'``, ``custom_imports``
    ``localvision.cls``) of a ``LocalImageClassifier`` on a timm model, as a dict."""
    model = dict(
        type='LocalImageClassifier',
        data_preprocessor=dict(preprocessor or IMAGENET_PRE),
        backbone=dict(type='StagedTimm', model_name=model_name, pretrained=False, **(backbone or {})),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=0, loss=dict(type='CrossEntropyLoss')),
        split=dict(num_modules=num_modules, strategy=strategy, input_size=tuple(input_size)),
        local_objective=dict(objective or INFOPRO),
        executor=dict(type=executor))
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(optimizer or SGD))
    if clip_grad:
        optim_wrapper['clip_grad'] = dict(clip_grad)
    return dict(default_scope='mmpretrain',
                custom_imports=dict(imports=['localvision.cls', 'localvision.engine'], allow_failed_imports=False),
                model=model, optim_wrapper=optim_wrapper, train_dataloader=dict(batch_size=batch_size))


def write_config(path: str, cfg: dict, comment: str = '') -> str:
    """``cfg`` as a Python config file (mmengine reads it with ``Config.fromfile``)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    lines = [f'# {comment or "a LocalImageClassifier config"} (written by tools/analysis/gpu_check.py)']
    lines += [f'{key} = {value!r}' for key, value in cfg.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def write_blocker(folder: str, names) -> str:
    """A ``sitecustomize.py`` in ``folder`` that blocks imports of ``names``; put ``folder`` first on
    ``PYTHONPATH`` to simulate a machine without those packages."""
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write(BLOCKER.format(names=tuple(sorted(names))))
    return folder


# ---------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------

def last_lines(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return '\n'.join(lines[-n:])


class Check:
    """Runs the parts in order within one time budget and keeps the JSON up to date."""

    def __init__(self, args):
        self.args = args
        self.out = osp.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.env_dir = osp.abspath(args.env_dir)
        self.python = args.python
        self.start = time.monotonic()
        self.reserve_s = min(120.0, 0.3 * args.budget_s)  # kept for the later parts by the optional reruns
        self.deadline = self.start + args.budget_s
        self.log_path = osp.join(self.out, 'gpu_check.log')
        open(self.log_path, 'w').close()
        self.paths: List[str] = []  # PYTHONPATH of the children, before the inherited one
        if args.block:
            self.paths.append(write_blocker(osp.join(self.env_dir, 'block'), args.block))
        self.paths += [ROOT, osp.join(self.env_dir, 'site'), osp.join(self.env_dir, 'stubs')]
        self.device: dict = {}  # figures of the device part
        self.cv2_stub = False  # a stub stands in for opencv (install_wheels)
        self.report = dict(
            tool='tools/analysis/gpu_check.sh', started=datetime.datetime.now().isoformat(timespec='seconds'),
            finished=False, wall_s=None, budget_s=args.budget_s, mode=None, python=self.python,
            command=' '.join([osp.relpath(__file__, ROOT)] + (args.argv or [])), blocked_imports=args.block or [],
            device=None, versions=None, parts={}, summary=None)

    # -- plumbing ------------------------------------------------------------------------------
    def log(self, msg: str, echo: bool = True) -> None:
        line = f'[gpu_check {time.monotonic() - self.start:6.1f}s] {msg}'
        with open(self.log_path, 'a') as f:
            f.write(line + '\n')
        if echo:
            print(line, flush=True)

    def env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg', PYTHONDONTWRITEBYTECODE='1')
        # mmcv-lite warns on import that mmcv.ops is absent (MultiScaleDeformableAttention): expected here
        env['PYTHONWARNINGS'] = ','.join(w for w in (os.environ.get('PYTHONWARNINGS'),
                                                     'ignore:Fail to import::mmcv.cnn.bricks.transformer') if w)
        env['PYTHONPATH'] = os.pathsep.join(self.paths + [p for p in [os.environ.get('PYTHONPATH')] if p])
        return env

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run_process(self, argv: List[str], timeout: float) -> str:
        """Run ``argv`` (output into the log) within ``timeout`` s; returns its output, raises
        :class:`PartFailed` with the last lines on a non-zero exit or a timeout."""
        if self.remaining() < 1:
            raise PartSkipped('no time left in the budget')
        timeout = min(timeout, self.remaining())
        self.log('$ ' + ' '.join(a if '\n' not in a else '<inline script>' for a in argv), echo=False)
        with open(self.log_path, 'a') as log:
            offset = log.tell()
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            finally:  # on a timeout, and when the check itself is stopped (SIGTERM, Ctrl-C)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group (pytest, spawned ranks)
                    proc.wait()
        with open(self.log_path, errors='replace') as log:
            log.seek(offset)
            output = log.read()
        if rc is None:
            raise PartFailed(f'timed out after {timeout:.1f} s\n' + last_lines(output))
        if rc != 0:
            raise PartFailed(f'exit code {rc}\n' + last_lines(output))
        return output

    def run_parts_script(self, part: str, timeout: float, *extra: str) -> dict:
        """``gpu_check_parts.py PART``: its result (status, figures, notes) from a JSON file."""
        result = osp.join(self.env_dir, 'results', part + '.json')
        os.makedirs(osp.dirname(result), exist_ok=True)
        if osp.exists(result):
            os.remove(result)
        self.run_process([self.python, PARTS_SCRIPT, part, '--result', result, '--device', self.torch_device,
                          *(['--tiny'] if self.tiny else []), *extra], timeout)
        with open(result) as f:
            return json.load(f)

    @property
    def cuda(self) -> bool:
        return bool(self.device.get('cuda_available'))

    @property
    def torch_device(self) -> str:
        return 'cuda' if self.cuda else 'cpu'

    @property
    def tiny(self) -> bool:
        return not self.cuda

    def importable(self, name: str) -> bool:
        return bool(self.device.get('importable', {}).get(name))

    def write_json(self) -> None:
        path = osp.join(self.out, 'gpu_check.json')
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.report, f, indent=2)
        os.replace(tmp, path)

    def part(self, name: str, timeout: float, fn: Callable[[float], dict]) -> None:
        """Run one part: ``fn(timeout)`` returns figures/notes (or raises PartSkipped/PartFailed)."""
        if self.args.parts and name not in self.args.parts:
            return
        t0 = time.monotonic()
        entry: dict = dict(status='ok', seconds=None, figures={}, notes=[])
        try:
            if self.remaining() < MIN_PART_S:
                raise PartSkipped(f'no time left in the {self.args.budget_s:.0f} s budget')
            scale = self.args.timeout_scale * (CPU_TIMEOUT_SCALE if self.device and self.tiny else 1)
            result = fn(min(timeout * scale, self.remaining()))
            entry.update({k: v for k, v in result.items() if k in ('status', 'figures', 'notes', 'reason')})
        except PartSkipped as e:
            entry.update(status='skipped', reason=str(e))
        except PartFailed as e:
            entry.update(status='failed', error=str(e))
        except Exception as e:  # a bug of the driver itself must not end the check either
            entry.update(status='failed', error=f'{type(e).__name__}: {e}')
        except BaseException:  # SIGTERM or Ctrl-C: the check stops, this part is recorded as stopped
            entry.update(status='failed', error='stopped by a signal while running')
            self.record(name, entry, t0)
            raise
        self.record(name, entry, t0)

    def record(self, name: str, entry: dict, t0: float) -> None:
        """Put a finished part into the JSON (written at once) and report it."""
        entry['seconds'] = round(time.monotonic() - t0, 1)
        self.report['parts'][name] = entry
        self.write_json()
        detail = entry.get('reason') or entry.get('error', '').split('\n')[0]
        self.log(f'{name}: {entry["status"]} ({entry["seconds"]} s){": " + detail if detail else ""}')
        if entry['status'] == 'failed':
            for line in entry['error'].splitlines()[1:]:
                print('    ' + line, flush=True)

    def needs_device(self) -> None:
        if not self.device:
            raise PartSkipped('the device part did not run or failed')
        if not self.cuda and not self.args.allow_cpu:
            raise PartSkipped('no CUDA device (LV_GPU_CHECK_ALLOW_CPU=1 runs the CPU dry run)')

    # -- the parts -----------------------------------------------------------------------------
    def install_wheels(self, timeout: float) -> dict:
        site, stubs = osp.join(self.env_dir, 'site'), osp.join(self.env_dir, 'stubs')
        for d in (site, stubs):
            shutil.rmtree(d, ignore_errors=True)
        wheels_dir = osp.abspath(self.args.wheels)
        if not osp.isfile(osp.join(wheels_dir, 'manifest.json')):
            raise PartFailed(f'no wheels in {wheels_dir} (python tools/analysis/gpu_check.py --fetch-wheels, '
                             'then carry work_dirs/gpu_wheels)')
        probe = ('import importlib.util, json, platform, sys\n'
                 'def ok(n):\n'
                 '    try:\n        return importlib.util.find_spec(n) is not None\n'
                 '    except Exception:\n        return False\n'
                 'print(json.dumps(dict(py="%d.%d" % sys.version_info[:2], machine=platform.machine(), '
                 'found={n: ok(n) for n in sys.argv[1:]})))')

        def run_probe(*names: str) -> dict:
            return json.loads(self.run_process([self.python, '-c', probe, *names], timeout).strip().splitlines()[-1])

        here = run_probe()
        wheels, note = choose_wheels(wheels_dir, here['py'], here['machine'])
        tops = {w: wheel_top_levels(osp.join(wheels_dir, w)) for w in wheels}
        found = run_probe('cv2', *sorted({t for ts in tops.values() for t in ts}))['found']
        installed, present = [], []
        for w in wheels:
            if tops[w] and all(found[t] for t in tops[w]):
                present.append(w)
            else:
                extract_wheel(osp.join(wheels_dir, w), site)
                installed.append(w)
        notes = [note] if note else []
        self.cv2_stub = not found['cv2']
        if not found['cv2']:
            os.makedirs(osp.join(stubs, 'cv2'))
            with open(osp.join(stubs, 'cv2', '__init__.py'), 'w') as f:
                f.write(CV2_STUB)
            notes.append('cv2 absent: a stub stands in for it (mmengine and mmcv import cv2 at module level; '
                         'nothing on the synthetic-batch paths calls it; calling it raises)')
        versions = ('import json, mmengine, mmengine.runner, matplotlib, matplotlib.pyplot\n'
                    'print(json.dumps(dict(mmengine=mmengine.__version__, matplotlib=matplotlib.__version__)))')
        imports = json.loads(self.run_process([self.python, '-c', versions], timeout).strip().splitlines()[-1])
        return dict(figures=dict(python=here['py'], machine=here['machine'], installed=installed,
                                 already_present=present, stub_cv2=not found['cv2'], imports=imports), notes=notes)

    def device_part(self, timeout: float) -> dict:
        result = self.run_parts_script('device', timeout)
        self.device = result['figures']
        self.report['device'] = {k: self.device.get(k) for k in (
            'name', 'capability', 'total_memory_gib', 'device_count', 'driver', 'bf16_supported', 'cuda_available')}
        self.report['versions'] = self.device.get('versions')
        self.report['mode'] = 'cuda' if self.cuda else 'cpu dry run (tiny sizes)'
        return result

    def cls_stack(self, timeout: float) -> dict:
        """The classification stack (mmengine, mmcv, mmpretrain, localvision.cls) imports, from the
        carried wheels where the device lacks them, and a K=2 LocalImageClassifier trains a step."""
        self.needs_device()
        return self.run_parts_script('cls_stack', timeout, '--site', osp.join(self.env_dir, 'site'))

    def pytest_part(self, files: List[str], junit_name: str, timeout: float, marks: str = 'gpu') -> dict:
        """Run pytest on ``files`` with ``-m marks``; figures per test from its JUnit XML."""
        self.needs_device()
        if not self.importable('pytest'):
            raise PartSkipped('pytest is not importable (its wheel was not installed)')
        junit = osp.join(self.out, junit_name)
        argv = pytest_argv(self.python, marks, junit, files)
        try:
            self.run_process(argv, timeout)
            error = None
        except PartFailed as e:
            error = e
        if not osp.exists(junit):
            raise error or PartFailed('pytest wrote no JUnit XML')
        tests = junit_results(junit)
        missing_openmmlab = [t for t in tests if t['outcome'] in ('failed', 'error')
                             and re.search(r"No module named '(%s)" % '|'.join(OPENMMLAB), t['message'])]
        for t in missing_openmmlab:
            t['outcome'], t['message'] = 'skipped', 'needs an OpenMMLab package: ' + t['message']
        counts = {o: sum(t['outcome'] == o for t in tests) for o in ('passed', 'failed', 'error', 'skipped')}
        figures = dict(counts=counts, tests=tests)
        if counts['failed'] or counts['error']:
            bad = [f"{t['name']}: {t['message']}" for t in tests if t['outcome'] in ('failed', 'error')]
            where = ['\n'.join(t['traceback'].splitlines()[-15:]) for t in tests if t.get('traceback')][:3]
            said = [f"{t['name']} stderr:\n" + '\n'.join(t['stderr'].splitlines()[-15:])
                    for t in tests if t.get('stderr')][:3]
            raise PartFailed('\n'.join(bad[:10] + where + said))
        if error is not None and not tests:
            raise error
        notes = [f'pytest: {str(error).splitlines()[0]}'] if error is not None else []
        if counts['skipped'] == len(tests):
            notes.append('every test skipped' + ('' if self.cuda else ': no CUDA device'))
        return dict(figures=figures, notes=notes)

    def pytest_gpu(self, timeout: float) -> dict:
        tests = sorted(glob.glob(osp.join(ROOT, 'tests', '**', 'test_*.py'), recursive=True))
        files = [osp.relpath(f, ROOT) for f in tests
                 if 'mark.gpu' in open(f).read() and not f.endswith('test_pipeline_cuda.py')]
        return self.pytest_part(files, 'pytest_gpu.xml', timeout)

    def pipeline_cuda(self, timeout: float) -> dict:
        if self.device and not self.importable('mmcv'):
            raise PartSkipped('mmcv absent: the test trains from an image folder (mmcv transforms, LoadImageFromFile)')
        if self.cv2_stub:
            raise PartSkipped('opencv absent (cv2 is a stub here): the test reads images from a folder '
                              '(LoadImageFromFile decodes with cv2)')
        # the CPU dry run runs the test's CPU cases: the same config, data and processes, stages on the CPU
        # (also with torch reporting one GPU that both stages share)
        result = self.pytest_part(['tests/engine/test_pipeline_cuda.py'], 'pytest_pipeline_cuda.xml', timeout,
                                  marks='gpu' if self.cuda else 'not gpu')
        if self.cuda and self.device.get('device_count', 0) < 2:
            result['notes'].append('one GPU: the nccl case (one GPU per stage) needs 2 and is skipped; the auto '
                                   'case (gloo) runs both stages on the one GPU')
        return result

    def amp(self, task: str) -> Callable[[float], dict]:
        def run(timeout: float) -> dict:
            self.needs_device()
            needed = {'seg': ('mmcv', 'mmseg'), 'det': ('mmcv', 'mmdet')}.get(task, ())
            absent = [m for m in needed if not self.importable(m)]
            if absent:
                raise PartSkipped(f'{" and ".join(absent)} absent')
            return self.run_parts_script('amp', timeout, '--task', task)
        return run

    def benchmark(self, name: str, model: str, full: List[str], tiny: List[str]) -> Callable[[float], dict]:
        """``benchmark_memory.py`` on ``CLS_MODELS[model]`` (an mmpretrain config written under the
        env folder), then, if the part's time allows, its memory-only rerun."""
        def run(timeout: float) -> dict:
            self.needs_device()
            notes = []
            kwargs = CLS_MODELS[model][1 if self.tiny else 0]
            config_path = write_config(osp.join(self.env_dir, 'configs', f'{name}.py'), cls_config(**kwargs),
                                       f'{name} of the GPU check')
            out_dir = osp.join(self.out, name)
            shutil.rmtree(out_dir, ignore_errors=True)
            args = tiny if self.tiny else full
            t0 = time.monotonic()
            self.run_process([self.python, BENCHMARK_SCRIPT, config_path, *args, '--out-dir', out_dir], timeout)
            figures = benchmark_figures(osp.join(out_dir, 'benchmark.json'))
            figures['model'] = kwargs['model_name']
            took = time.monotonic() - t0
            left = min(timeout - took, self.remaining() - self.reserve_s)
            if left > 1.2 * took:
                try:
                    self.one_at_a_time(figures, config_path, args, osp.join(out_dir, 'one_at_a_time'), left)
                except (PartFailed, PartSkipped) as e:
                    notes.append('memory-only rerun failed: ' + str(e).replace('\n', ' | '))
            else:
                notes.append(f'memory-only rerun skipped: {left:.0f} s left for it, the first run took {took:.0f} s')
            return dict(figures=figures, notes=notes)
        return run

    def one_at_a_time(self, figures: dict, config_path: str, args: List[str], out_dir: str, timeout: float) -> None:
        """Rerun a benchmark memory-only (``--iters 0``: one model on the device at a time) and put
        its peaks beside the side-by-side ones, which must not count the other variants."""
        args = list(args)
        args[args.index('--iters') + 1] = '0'
        self.run_process([self.python, BENCHMARK_SCRIPT, config_path, *args, '--out-dir', out_dir], timeout)
        alone = benchmark_figures(osp.join(out_dir, 'benchmark.json'))['variants']
        for name, v in figures['variants'].items():
            v['peak_mib_one_at_a_time'] = alone[name]['peak_mib']
            v['side_by_side_vs_one_at_a_time'] = round(v['peak_mib'] / alone[name]['peak_mib'] - 1, 4)

    # -- all of it -----------------------------------------------------------------------------
    def run(self) -> dict:
        self.log(f'out={self.out} python={self.python} budget={self.args.budget_s:.0f}s')
        try:
            self.run_parts()
        finally:
            statuses = [p['status'] for p in self.report['parts'].values()]
            self.report.update(wall_s=round(time.monotonic() - self.start, 1),
                               summary={s: statuses.count(s) for s in ('ok', 'failed', 'skipped')})
            self.write_json()
        for line in figure_lines(self.report):
            print(line, flush=True)
        self.log(f"done in {self.report['wall_s']} s: {self.report['summary']}; {self.out}/gpu_check.json")
        return self.report

    def run_parts(self) -> None:
        # the most valuable figures first: the ImageNet-size benchmarks, then the checkpointing ones,
        # then AMP, and the tests last
        self.part('install_wheels', 60, self.install_wheels)
        self.part('device', 45, self.device_part)
        self.part('cls_stack', 60, self.cls_stack)
        # 'balanced' (the split) minimises the largest module's peak, InfoPro's decoders
        # counted; the 'equal' split (equal block counts) is put beside it for context
        equal = ['--variant', 'K=4 equal:model.split.num_modules=4,model.split.strategy=equal']
        for name, model, bs in (('benchmark_resnet101', 'resnet101', 32), ('benchmark_deit_s', 'deit_s', 32)):
            self.part(name, 75, self.benchmark(
                name, model,
                full=['--ks', '1', '2', '4', '--batch-size', str(bs), '--input-size', '3', '224', '224',
                      '--iters', '10', *equal],
                tiny=['--ks', '1', '2', '4', '--batch-size', '2', '--iters', '1', *equal]))
        self.part('benchmark_resnet110', 55, self.benchmark(
            'benchmark_resnet110', 'resnet110',
            full=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '128', '--iters', '10'],
            tiny=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '8', '--iters', '1']))
        self.part('benchmark_vit_s16', 55, self.benchmark(
            'benchmark_vit_s16', 'vit_s16',
            full=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '64', '--input-size', '3', '224', '224',
                  '--iters', '10'],
            tiny=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '4', '--iters', '1']))
        for task in ('cls', 'seg', 'det'):
            self.part(f'amp_{task}', 50 if task == 'cls' else 45, self.amp(task))
        self.part('pytest_gpu', 60, self.pytest_gpu)
        self.part('pipeline_cuda', 60, self.pipeline_cuda)
        self.report['finished'] = True


def pytest_argv(python: str, marks: str, junit: str, files: List[str]) -> List[str]:
    """The pytest command of a test part. ``junit_logging``: a failed test's captured stderr goes
    into the XML, that of the processes it started too (a training process prints its own
    traceback there before it exits; the test's traceback shows only that it exited)."""
    return [python, '-m', 'pytest', '-m', marks, '-p', 'no:cacheprovider', '-q', '-rA',
            '--continue-on-collection-errors', '-o', 'junit_logging=system-err',
            '-o', 'junit_log_passing_tests=False', f'--junitxml={junit}', *files]


def junit_results(path: str) -> List[dict]:
    """Per test case of a pytest JUnit XML: name, outcome (passed/failed/error/skipped), message;
    for a failure or error also the last 40 lines of its traceback (``traceback``) and of its
    captured stderr (``stderr``: that of the processes the test started, whose own tracebacks the
    test's traceback does not show), so the JSON alone says where it failed."""
    out = []
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome, message, trace, err = 'passed', '', None, None
        for tag in ('failure', 'error', 'skipped'):
            el = case.find(tag)
            if el is not None:
                outcome = 'failed' if tag == 'failure' else tag
                message = (el.get('message') or el.text or '').strip().splitlines()[-1:] or ['']
                message = message[0][:300]
                if tag != 'skipped' and el.text:
                    trace = '\n'.join(el.text.strip().splitlines()[-40:])
                captured = case.find('system-err')
                if tag != 'skipped' and captured is not None and captured.text:
                    lines = [ln for ln in captured.text.strip().splitlines() if not ln.startswith('-----')]
                    err = '\n'.join(lines[-40:]) or None
                break
        row = dict(name=f"{case.get('classname')}::{case.get('name')}", outcome=outcome, message=message,
                   seconds=float(case.get('time') or 0))
        if trace is not None:
            row['traceback'] = trace
        if err is not None:
            row['stderr'] = err
        out.append(row)
    return out


def benchmark_figures(path: str) -> dict:
    """Peak MiB, ms/iter and the ratios vs E2E per variant of a ``benchmark_memory.py`` JSON."""
    with open(path) as f:
        data = json.load(f)
    variants = {}
    for r in data['results']:
        v = dict(k=r['k'], peak_mib=round(r['peak_bytes'] / 2**20, 1), memory_ratio=round(r['memory_ratio'], 4),
                 split=r.get('split', ''))
        if 'sec_per_iter' in r:
            v.update(ms_per_iter=round(1000 * r['sec_per_iter'], 2), time_ratio=round(r['time_ratio'], 3))
        variants[r['name']] = v
    meta = data['meta']
    return dict(variants=variants, device=meta['device'], batch_size=meta['batch_size'],
                input_size=meta['input_size'], iters=meta['iters'], memory_metric=meta['memory_metric'])


def figure_lines(report: dict) -> List[str]:
    """The main figures in a few lines, for a console that shows only the end of the output."""
    def amp_run(precision: str, r: dict) -> str:
        if 'peak_mib' not in r:
            return f'{precision} skipped'
        vs = f" (x{r['memory_vs_fp32']} memory, x{r['time_vs_fp32']} time of fp32)" if 'memory_vs_fp32' in r else ''
        return f"{precision} {r['peak_mib']} MiB {r['ms_per_iter']} ms{vs}"

    def variant(name: str, r: dict) -> str:
        return (f"{name} {r['peak_mib']} MiB ({r['memory_ratio']:.1%}) {r.get('ms_per_iter', '-')} ms "
                f"(x{r.get('time_ratio', '-')})")

    lines = [f"device: {report.get('device')}", f"versions: {report.get('versions')}"]
    for name, part in report['parts'].items():
        f = part.get('figures') or {}
        if part['status'] != 'ok':
            detail = part.get('reason') or part.get('error', '').split('\n')[0]
        elif name.startswith('amp_'):
            detail = ' | '.join(amp_run(p, f[p]) for p in ('fp32', 'fp16', 'bf16') if p in f)
        elif name.startswith('benchmark_'):
            detail = ' | '.join(variant(v, r) for v, r in f['variants'].items())
        else:
            detail = str(f.get('counts', ''))
        lines.append(f"{name}: {part['status']} {detail}")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=os.environ.get('OUT') or osp.join(ROOT, 'work_dirs', 'gpu_check'),
                   help='results folder (default: $OUT, else work_dirs/gpu_check)')
    p.add_argument('--python', default=os.environ.get('LV_GPU_CHECK_PYTHON') or sys.executable,
                   help='the interpreter the parts run with (default: this one)')
    p.add_argument('--wheels', default=WHEELS_DIR, help='the carried wheels (default: work_dirs/gpu_wheels)')
    p.add_argument('--env-dir', default=ENV_DIR,
                   help='where the wheels are extracted (default: work_dirs/gpu_check_env)')
    p.add_argument('--allow-cpu', action='store_true', default=os.environ.get('LV_GPU_CHECK_ALLOW_CPU') == '1',
                   help='without CUDA, run the parts on the CPU with tiny sizes (also LV_GPU_CHECK_ALLOW_CPU=1)')
    p.add_argument('--block', nargs='*', metavar='PACKAGE',
                   default=[b for b in os.environ.get('LV_GPU_CHECK_BLOCK', '').split(',') if b],
                   help='make these packages unimportable in the parts (simulates a machine without them), '
                        'e.g. mmcv mmseg mmdet mmpretrain (also LV_GPU_CHECK_BLOCK=mmcv,mmseg,...)')
    p.add_argument('--budget-s', type=float, default=float(os.environ.get('LV_GPU_CHECK_BUDGET_S', 360)),
                   help='wall-time budget of the whole check (default 360 s)')
    p.add_argument('--timeout-scale', type=float, default=float(os.environ.get('LV_GPU_CHECK_TIMEOUT_SCALE', 1)),
                   help='multiply every part\'s timeout (still bounded by the budget)')
    p.add_argument('--parts', nargs='*', default=None, help='run only these parts (default: all)')
    p.add_argument('--fetch-wheels', action='store_true', help='download the wheels (needs network) and exit')
    p.add_argument('--python-versions', nargs='+', default=list(PYTHON_VERSIONS),
                   help='with --fetch-wheels: the Python versions to fetch binary wheels for')
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _stop(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fetch_wheels:
        fetch_wheels(args.wheels, args.python_versions)
        return 0
    signal.signal(signal.SIGTERM, _stop)  # a hard limit outside: stop the running part, keep the JSON
    Check(args).run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
