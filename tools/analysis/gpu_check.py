"""One-command GPU check (issue 15, item 4): one JSON of what works on a CUDA machine, and figures.

    bash tools/analysis/gpu_check.sh                           # or: make gpu-check; results in $OUT
    LV_GPU_CHECK_ALLOW_CPU=1 bash tools/analysis/gpu_check.sh  # the same parts on the CPU, tiny sizes
    python tools/analysis/gpu_check.py --fetch-wheels          # fill work_dirs/gpu_wheels (network, once)

Made for a bare machine: torch, torchvision and timm, but no OpenMMLab packages and no network.
The pure-Python wheels the check needs (mmengine 0.10.7 and its dependencies, matplotlib for the
plots, pytest) travel with the repository in ``work_dirs/gpu_wheels`` (``--fetch-wheels`` makes it:
pure wheels once, the few binary ones per Python version). opencv is not carried (60 MB):
mmengine imports ``cv2`` at module level in ``mmengine.visualization`` and ``mmengine.hooks`` but
nothing on the classification path calls it, so where cv2 is absent a stub that raises on use
stands in for it (said in the JSON).

Parts, in this order, each in its own process with a timeout (a part that fails, times out or is
skipped never stops the others), within one time budget (``--budget-s``, default 280 s):

1. ``install_wheels``: extract the wheels the device lacks into ``work_dirs/gpu_check_env/site``
   (put on ``PYTHONPATH`` with the repository; nothing is installed into the device's Python);
   ``device``: versions, GPU, which optional packages import;
2. ``cls_without_mmcv``: a small ``LocalImageClassifier`` (K=2) trains one step without mmcv;
3. ``pytest_gpu``: the ``gpu``-marked tests (``pytest -m gpu``), but the module-parallel one;
4. ``amp_cls`` / ``amp_seg`` / ``amp_det``: fp32, fp16 (loss scaling) and bf16 training steps
   through ``AmpOptimWrapper`` and ``PerModuleBackward`` (K=4 ResNet-110 for classification; the
   seg and det demo models where mmcv, mmseg and mmdet import);
5. ``benchmark_resnet110`` / ``benchmark_vit_s16``: ``benchmark_memory.py`` E2E vs K=4 on CUDA
   (``torch.cuda.max_memory_allocated``), plus a memory-only rerun (one model at a time) that
   checks the side-by-side peaks;
6. ``pipeline_cuda``: ``tests/engine/test_pipeline_cuda.py`` (module-parallel training on CUDA).

Writes ``$OUT/gpu_check.json`` (rewritten after every part, so a kill leaves the parts done so
far), ``$OUT/gpu_check.log`` (every child's output), the benchmarks' JSON and PNG under
``$OUT/benchmark_*`` and the tests' JUnit XML. Standard library only: what needs torch runs in
child processes (``gpu_check_parts.py``, ``benchmark_memory.py``, pytest).
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
    'fonttools', 'cycler', 'pyparsing', 'python-dateutil', 'six', 'packaging',  # matplotlib
    'pytest', 'pluggy', 'iniconfig', 'exceptiongroup', 'typing_extensions',  # pytest
)
BINARY_WHEELS = ('matplotlib', 'contourpy', 'kiwisolver')
PYTHON_VERSIONS = ('3.10', '3.11', '3.12')
MANYLINUX_X86_64 = ('manylinux2014_x86_64', 'manylinux_2_17_x86_64', 'manylinux_2_28_x86_64')
WHEELS_BUDGET_BYTES = 40 * 2**20
OPENMMLAB = ('mmcv', 'mmseg', 'mmdet', 'mmpretrain')

MIN_PART_S = 10  # a part is not started with less time than this left in the budget


class PartSkipped(Exception):
    """A part that cannot run here; the message says why."""


class PartFailed(Exception):
    """A part that ran and failed; the message holds the last lines of its output."""


# ---------------------------------------------------------------------------------------------
# wheels: fetched here (network), extracted there (no network, no pip needed)
# ---------------------------------------------------------------------------------------------

def fetch_wheels(wheels_dir: str, python_versions=PYTHON_VERSIONS) -> dict:
    """``pip download`` the check's wheels for each Python version into one flat folder, with a
    ``manifest.json`` naming each version's files (pip resolved them for that version)."""
    os.makedirs(wheels_dir, exist_ok=True)
    manifest: Dict[str, List[str]] = {}
    pip = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--quiet']
    for version in python_versions:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(pip + ['--python-version', version, '--implementation', 'py', '--abi', 'none',
                                  '--platform', 'any', '-d', tmp, *PURE_WHEELS], check=True)
            platforms = [a for p in MANYLINUX_X86_64 for a in ('--platform', p)]
            subprocess.run(pip + ['--python-version', version, *platforms, '-d', tmp, *BINARY_WHEELS], check=True)
            names = sorted(os.listdir(tmp))
            for name in names:
                if not osp.exists(osp.join(wheels_dir, name)):
                    shutil.move(osp.join(tmp, name), osp.join(wheels_dir, name))
        manifest[version] = names
    keep = {n for names in manifest.values() for n in names}
    for name in os.listdir(wheels_dir):  # files of an earlier fetch that no version uses now
        if name.endswith('.whl') and name not in keep:
            os.remove(osp.join(wheels_dir, name))
    total = sum(osp.getsize(osp.join(wheels_dir, n)) for n in keep)
    info = dict(python_versions=manifest, total_bytes=total, pure=list(PURE_WHEELS), binary=list(BINARY_WHEELS),
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

mmengine imports cv2 at module level (mmengine.visualization, mmengine.hooks) but only calls it to
draw or save images, which the GPU check never does. Any use raises.
"""
__lv_stub__ = True


def __getattr__(name):
    raise AttributeError(f'cv2.{name}: opencv is not installed (gpu_check stub)')
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
        self.deadline = self.start + args.budget_s
        self.log_path = osp.join(self.out, 'gpu_check.log')
        open(self.log_path, 'w').close()
        self.paths: List[str] = []  # PYTHONPATH of the children, before the inherited one
        if args.block:
            self.paths.append(write_blocker(osp.join(self.env_dir, 'block'), args.block))
        self.paths += [ROOT, osp.join(self.env_dir, 'site'), osp.join(self.env_dir, 'stubs')]
        self.device: dict = {}  # figures of the device part
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
            result = fn(min(timeout * self.args.timeout_scale, self.remaining()))
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
            if all(found[t] for t in tops[w]):
                present.append(w)
            else:
                extract_wheel(osp.join(wheels_dir, w), site)
                installed.append(w)
        notes = [note] if note else []
        if not found['cv2']:
            os.makedirs(osp.join(stubs, 'cv2'))
            with open(osp.join(stubs, 'cv2', '__init__.py'), 'w') as f:
                f.write(CV2_STUB)
            notes.append('cv2 absent: a stub that raises on use stands in for it (mmengine imports cv2 at module '
                         'level in mmengine.visualization and mmengine.hooks; nothing on this path calls it)')
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

    def cls_without_mmcv(self, timeout: float) -> dict:
        self.needs_device()
        return self.run_parts_script('cls_without_mmcv', timeout)

    def pytest_part(self, files: List[str], junit_name: str, timeout: float) -> dict:
        """Run pytest on ``files`` with ``-m gpu``; figures per test from its JUnit XML."""
        self.needs_device()
        if not self.importable('pytest'):
            raise PartSkipped('pytest is not importable (its wheel was not installed)')
        junit = osp.join(self.out, junit_name)
        argv = [self.python, '-m', 'pytest', '-m', 'gpu', '-p', 'no:cacheprovider', '-q', '-rA',
                '--continue-on-collection-errors', f'--junitxml={junit}', *files]
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
            raise PartFailed('\n'.join(bad[:10]))
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
            raise PartSkipped('mmcv absent: the test trains from an image folder through localvision.datasets '
                              "(mmcv transforms, LoadImageFromFile)")
        result = self.pytest_part(['tests/engine/test_pipeline_cuda.py'], 'pytest_pipeline_cuda.xml', timeout)
        if self.cuda and self.device.get('device_count', 0) < 2:
            result['notes'].append('one GPU: the nccl case (one GPU per stage) needs 2 and is skipped; the gloo '
                                   'case runs both stages on the one GPU')
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

    def benchmark(self, name: str, config: str, full: List[str], tiny: List[str]) -> Callable[[float], dict]:
        def run(timeout: float) -> dict:
            self.needs_device()
            notes = []
            if not self.importable('mmcv'):
                config_path = self._config_without_setup_env(config)
                notes.append("mmcv absent: the config's custom_imports (localvision.utils.setup_env, which imports "
                             'localvision.datasets and so mmcv) replaced by localvision.models + localvision.engine')
            else:
                config_path = osp.join(ROOT, config)
            out_dir = osp.join(self.out, name)
            shutil.rmtree(out_dir, ignore_errors=True)
            args = tiny if self.tiny else full
            t0 = time.monotonic()
            self.run_process([self.python, BENCHMARK_SCRIPT, config_path, *args, '--out-dir', out_dir], timeout)
            figures = benchmark_figures(osp.join(out_dir, 'benchmark.json'))
            took = time.monotonic() - t0
            left = min(timeout - took, self.remaining())
            if left > 1.2 * took:
                try:
                    self.one_at_a_time(figures, config_path, args, osp.join(out_dir, 'one_at_a_time'), left)
                except (PartFailed, PartSkipped) as e:
                    notes.append('memory-only rerun failed: ' + str(e).replace('\n', ' | '))
            else:
                notes.append(f'memory-only rerun skipped: {left:.0f} s left, the first run took {took:.0f} s')
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

    def _config_without_setup_env(self, config: str) -> str:
        """A config inheriting ``config`` whose ``custom_imports`` do not pull in mmcv."""
        path = osp.join(self.env_dir, 'configs', osp.basename(config))
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(f"# {config} for a machine without mmcv (written by tools/analysis/gpu_check.py)\n"
                    f"_base_ = [{osp.join(ROOT, config)!r}]\n"
                    "custom_imports = dict(imports=['localvision.models', 'localvision.engine'], "
                    "allow_failed_imports=False)\n")
        return path

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
        self.part('install_wheels', 60, self.install_wheels)
        self.part('device', 45, self.device_part)
        self.part('cls_without_mmcv', 60, self.cls_without_mmcv)
        self.part('pytest_gpu', 75, self.pytest_gpu)
        for task in ('cls', 'seg', 'det'):
            self.part(f'amp_{task}', 60 if task == 'cls' else 45, self.amp(task))
        self.part('benchmark_resnet110', 90, self.benchmark(
            'benchmark_resnet110', 'configs/cls/cifar_resnet110_e2e.py',
            full=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '128', '--iters', '10'],
            tiny=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '8', '--iters', '1',
                  '--cfg-options', 'model.backbone.model_name=cifar_resnet20']))
        self.part('benchmark_vit_s16', 90, self.benchmark(
            'benchmark_vit_s16', 'configs/cls/vit_tiny_shapes_greedy_k4.py',
            full=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '64', '--input-size', '3', '224', '224',
                  '--iters', '10',
                  '--cfg-options', 'model.backbone.model_name=vit_small_patch16_224', 'model.backbone.img_size=224',
                  'model.backbone.patch_size=16'],
            tiny=['--ks', '1', '4', '--checkpoint-ks', '--batch-size', '4', '--input-size', '3', '32', '32',
                  '--iters', '1']))
        self.part('pipeline_cuda', 60, self.pipeline_cuda)
        self.report['finished'] = True


def junit_results(path: str) -> List[dict]:
    """Per test case of a pytest JUnit XML: name, outcome (passed/failed/error/skipped), message."""
    out = []
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome, message = 'passed', ''
        for tag in ('failure', 'error', 'skipped'):
            el = case.find(tag)
            if el is not None:
                outcome = 'failed' if tag == 'failure' else tag
                message = (el.get('message') or el.text or '').strip().splitlines()[-1:] or ['']
                message = message[0][:300]
                break
        out.append(dict(name=f"{case.get('classname')}::{case.get('name')}", outcome=outcome, message=message,
                        seconds=float(case.get('time') or 0)))
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
    p.add_argument('--budget-s', type=float, default=float(os.environ.get('LV_GPU_CHECK_BUDGET_S', 280)),
                   help='wall-time budget of the whole check (default 280 s)')
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
