"""The GPU check's plumbing on the CPU: the classification stack (mmpretrain, mmcv) without mmseg
and mmdet, the cv2 stub, the carried wheels, the offline wheel install, skips, timeouts and the
JSON (tools/analysis/gpu_check.py)."""
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import gpu_check  # noqa: E402

PARTS = osp.join(ROOT, 'tools', 'analysis', 'gpu_check_parts.py')


def blocked_env(tmp_path, names) -> dict:
    """Environment whose Python cannot import ``names`` (a sitecustomize blocks them)."""
    block = gpu_check.write_blocker(str(tmp_path / 'block'), names)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([block, ROOT]), OMP_NUM_THREADS='1')


@pytest.mark.slow  # a fresh interpreter imports mmcv and mmpretrain and trains a step
def test_cls_stack_trains_through_mmpretrain_without_mmseg_and_mmdet(tmp_path):
    """The classification stack part: a K=2 LocalImageClassifier built through mmpretrain's MODELS
    trains a step on mmpretrain DataSamples where neither mmseg nor mmdet can be imported."""
    result = tmp_path / 'r.json'
    site = tmp_path / 'site'
    out = subprocess.run([sys.executable, PARTS, 'cls_stack', '--result', str(result), '--device', 'cpu',
                          '--site', str(site)], env=blocked_env(tmp_path, ['mmseg', 'mmdet']), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(result.read_text())['figures']
    assert figures['openmmlab_imported'] == ['mmcv', 'mmpretrain']
    assert figures['units_changed'] == '2/2' and figures['objectives'] == ['InfoPro']
    assert figures['data_sample'] == 'mmpretrain.structures.data_sample'
    assert figures['registry'] == 'localvision.cls.local_image_classifier'
    assert figures['imports']['mmpretrain']['origin'] == 'device'  # nothing extracted into `site` here
    assert figures['imports']['localvision.cls']['origin'] == 'repository'


@pytest.mark.slow  # a fresh interpreter imports mmcv and mmpretrain
def test_the_cv2_stub_lets_mmcv_and_mmpretrain_import_and_raises_on_use(tmp_path):
    stubs = tmp_path / 'stubs' / 'cv2'
    stubs.mkdir(parents=True)
    (stubs / '__init__.py').write_text(gpu_check.CV2_STUB)
    code = ('import cv2, mmcv, mmpretrain.models, localvision.cls\n'
            'from cv2 import IMREAD_COLOR, INTER_LINEAR\n'
            'assert cv2.__lv_stub__ and IMREAD_COLOR != INTER_LINEAR and cv2.INTER_LINEAR == INTER_LINEAR\n'
            'cv2.setNumThreads(0); cv2.ocl.setUseOpenCL(False)\n'
            'try:\n    cv2.imread("x.png")\nexcept RuntimeError as e:\n    print("raised:", e)\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / 'stubs'), ROOT]))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'raised: cv2.imread: opencv is not installed (gpu_check stub)' in out.stdout


def test_cls_configs_are_mmpretrain_configs_of_the_local_classifier(tmp_path):
    from mmengine.config import Config
    path = gpu_check.write_config(str(tmp_path / 'c.py'), gpu_check.cls_config(
        **gpu_check.CLS_MODELS['resnet101'][0], num_modules=4))
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain' and 'localvision.cls' in cfg.custom_imports['imports']
    assert cfg.model.type == 'LocalImageClassifier' and cfg.model.backbone.model_name == 'resnet101'
    assert cfg.model.split == dict(num_modules=4, strategy='balanced', input_size=(3, 224, 224))
    assert cfg.model.local_objective == dict(type='InfoPro', lambda_recon=(5, 1), lambda_task=(1, 1),
                                             head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder'))
    assert gpu_check.CLS_MODELS['deit_s'][0]['model_name'] == 'deit_small_patch16_224'


def test_the_carried_wheels_hold_the_classification_stack_and_a_pure_mmcv():
    """Checks work_dirs/gpu_wheels as --fetch-wheels left it (git-ignored: skipped where absent)."""
    manifest_path = osp.join(gpu_check.WHEELS_DIR, 'manifest.json')
    if not osp.exists(manifest_path):
        pytest.skip('no work_dirs/gpu_wheels here (python tools/analysis/gpu_check.py --fetch-wheels)')
    manifest = json.load(open(manifest_path))
    assert set(manifest['python_versions']) >= set(gpu_check.PYTHON_VERSIONS)
    for version, names in manifest['python_versions'].items():
        projects = {gpu_check.wheel_tags(n)[0] for n in names}
        assert {'mmengine', 'mmpretrain', 'mmcv_lite', 'einops', 'mat4py', 'model_index', 'matplotlib',
                'pytest', 'setuptools'} <= projects, version
        setuptools = [n for n in names if gpu_check.wheel_tags(n)[0] == 'setuptools']
        assert int(setuptools[0].split('-')[1].split('.')[0]) < 81, setuptools  # still ships pkg_resources
        assert 'pkg_resources' in gpu_check.wheel_top_levels(osp.join(gpu_check.WHEELS_DIR, setuptools[0]))
        for n in names:
            assert osp.exists(osp.join(gpu_check.WHEELS_DIR, n)), n
    mmcv = [n for n in manifest['python_versions']['3.11'] if n.startswith('mmcv_lite-2.1.0-')]
    assert len(mmcv) == 1 and mmcv[0].endswith('-none-any.whl')
    assert gpu_check.compiled_members(osp.join(gpu_check.WHEELS_DIR, mmcv[0])) == []
    assert 'mmcv' in gpu_check.wheel_top_levels(osp.join(gpu_check.WHEELS_DIR, mmcv[0]))
    assert manifest['total_bytes'] < gpu_check.WHEELS_BUDGET_BYTES


def test_an_installed_but_broken_mmcv_still_fails_loudly(tmp_path):
    pytest.importorskip('mmcv')
    code = 'import localvision.registry'
    out = subprocess.run([sys.executable, '-c', code], env=blocked_env(tmp_path, ['cv2']), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "No module named 'cv2'" in out.stderr


def make_wheel(folder, filename, files) -> str:
    path = osp.join(folder, filename)
    with zipfile.ZipFile(path, 'w') as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_wheel_tags_and_extraction(tmp_path):
    fits = gpu_check.wheel_fits
    assert fits('m-1.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl', '3.11', 'x86_64')
    assert not fits('m-1.0-cp311-cp311-manylinux2014_x86_64.whl', '3.12', 'x86_64')
    assert not fits('m-1.0-cp311-cp311-manylinux2014_x86_64.whl', '3.11', 'aarch64')
    assert fits('m-1.0-py3-none-any.whl', '3.13', 'aarch64') and fits('s-1.0-py2.py3-none-any.whl', '3.10', 'x86_64')
    assert fits('o-4.0-cp37-abi3-manylinux_2_28_x86_64.whl', '3.11', 'x86_64')

    wheel = make_wheel(tmp_path, 'lvfake-1.0-py3-none-any.whl', {
        'lvfake/__init__.py': 'X = 1\n', 'lvfake_single.py': 'Y = 2\n', 'lvfake-1.0.dist-info/METADATA': '',
        'lvfake-1.0.data/purelib/lvfake_extra/__init__.py': 'Z = 3\n', 'lvfake-1.0.data/scripts/tool': '#!x\n'})
    assert gpu_check.wheel_top_levels(wheel) == ['lvfake', 'lvfake_extra', 'lvfake_single']
    site = tmp_path / 'site'
    gpu_check.extract_wheel(wheel, str(site))
    assert (site / 'lvfake' / '__init__.py').read_text() == 'X = 1\n'
    assert (site / 'lvfake_extra' / '__init__.py').exists() and (site / 'lvfake_single.py').exists()
    assert not (site / 'tool').exists() and not (site / 'lvfake-1.0.data').exists()


def test_choose_wheels_by_manifest_and_fallback_to_pure_wheels(tmp_path):
    manifest = {'3.11': ['a-1-py3-none-any.whl', 'b-1-cp311-cp311-manylinux2014_x86_64.whl'],
                '3.12': ['a-2-py3-none-any.whl', 'b-1-cp312-cp312-manylinux2014_x86_64.whl']}
    (tmp_path / 'manifest.json').write_text(json.dumps(dict(python_versions=manifest)))
    assert gpu_check.choose_wheels(str(tmp_path), '3.11', 'x86_64') == (manifest['3.11'], '')
    wheels, note = gpu_check.choose_wheels(str(tmp_path), '3.13', 'x86_64')
    assert wheels == ['a-2-py3-none-any.whl'] and 'no wheels fetched for Python 3.13' in note
    wheels, note = gpu_check.choose_wheels(str(tmp_path), '3.12', 'aarch64')
    assert wheels == ['a-2-py3-none-any.whl'] and 'do not fit aarch64' in note


def run_check(tmp_path, *args):
    """The check as the shell script runs it, on the CPU, with its own wheel folder."""
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    name = 'lvgpucheckfake-1.0-py3-none-any.whl'
    make_wheel(wheels, name, {'lvgpucheckfake/__init__.py': '', 'lvgpucheckfake-1.0.dist-info/METADATA': ''})
    py = f'{sys.version_info[0]}.{sys.version_info[1]}'
    (wheels / 'manifest.json').write_text(json.dumps(dict(python_versions={py: [name]})))
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), LV_GPU_CHECK_PYTHON=sys.executable, LV_GPU_CHECK_ALLOW_CPU='1',
               OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu_check.sh'), '--wheels', str(wheels),
                           '--env-dir', str(tmp_path / 'env'), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / 'gpu_check.json').read_text()), out


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU dry run')
def test_cpu_dry_run_with_mmseg_and_mmdet_blocked_writes_one_json(tmp_path):
    report, out = run_check(tmp_path, '--block', 'mmseg', 'mmdet', '--parts', 'install_wheels', 'device',
                            'cls_stack', 'pytest_gpu', 'amp_seg', 'amp_det', 'pipeline_cuda')
    parts = report['parts']
    assert report['finished'] and report['mode'].startswith('cpu dry run')
    assert list(parts) == ['install_wheels', 'device', 'cls_stack', 'amp_seg', 'amp_det', 'pytest_gpu',
                           'pipeline_cuda']
    assert parts['install_wheels']['figures']['installed'] == ['lvgpucheckfake-1.0-py3-none-any.whl']
    assert (tmp_path / 'env' / 'site' / 'lvgpucheckfake' / '__init__.py').exists()
    assert parts['device']['figures']['importable']['mmseg'] is False
    assert parts['cls_stack']['status'] == 'ok', parts['cls_stack']
    assert parts['cls_stack']['figures']['openmmlab_imported'] == ['mmcv', 'mmpretrain']
    assert parts['pytest_gpu']['status'] == 'ok' and parts['pytest_gpu']['figures']['counts']['skipped'] >= 3
    assert parts['amp_seg'] == dict(status='skipped', seconds=0.0, figures={}, notes=[], reason='mmseg absent')
    assert parts['amp_det']['reason'] == 'mmdet absent'
    # its CPU cases train: stages on the CPU, also with torch reporting one GPU that both share
    assert parts['pipeline_cuda']['status'] == 'ok'
    assert parts['pipeline_cuda']['figures']['counts']['passed'] == 2
    assert report['summary'] == dict(ok=5, failed=0, skipped=2)
    assert 'install_wheels: ok' in (out / 'gpu_check.log').read_text()


def test_a_part_that_times_out_fails_and_the_parts_after_it_skip(tmp_path):
    report, _ = run_check(tmp_path, '--parts', 'device', 'cls_stack', '--timeout-scale', '0.01')
    device, cls = report['parts']['device'], report['parts']['cls_stack']
    assert device['status'] == 'failed' and device['error'].startswith('timed out after')
    assert cls == dict(status='skipped', seconds=0.0, figures={}, notes=[],
                       reason='the device part did not run or failed')
    assert report['finished'] and report['summary'] == dict(ok=0, failed=1, skipped=1)


def test_benchmark_keeps_optimizer_state_with_its_model():
    """On CUDA each variant's model leaves the device after it is measured, its optimizer state too
    (here moved between cpu and meta): Adam's CPU step counter stays where it is."""
    import benchmark_memory
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    benchmark_memory.move_optimizer_state(opt, 'cpu', 'meta')
    state = opt.state[p]
    assert state['exp_avg'].device.type == 'meta' and state['exp_avg_sq'].device.type == 'meta'
    assert state['step'].device.type == 'cpu'


def test_junit_results_keep_the_traceback_of_a_failure(tmp_path):
    """A failed part's JSON says where the test failed (the pipeline test on a GPU machine once
    reported only 'IndexError: list index out of range')."""
    xml = tmp_path / 'j.xml'
    xml.write_text('<testsuites><testsuite><testcase classname="t" name="ok" time="1"/>'
                   '<testcase classname="t" name="bad" time="2"><failure message="IndexError: list index out of range">'
                   'Traceback\n  File "x.py", line 3, in f\n    a[5]\nIndexError: list index out of range</failure>'
                   '</testcase><testcase classname="t" name="skip"><skipped message="no gpu"/></testcase>'
                   '</testsuite></testsuites>')
    rows = {r['name']: r for r in gpu_check.junit_results(str(xml))}
    assert rows['t::ok']['outcome'] == 'passed' and 'traceback' not in rows['t::ok']
    assert rows['t::bad']['outcome'] == 'failed'
    assert 'File "x.py", line 3' in rows['t::bad']['traceback']
    assert rows['t::skip']['outcome'] == 'skipped' and 'traceback' not in rows['t::skip']


@pytest.mark.slow  # runs pytest in a fresh interpreter
def test_a_failed_test_keeps_the_stderr_of_the_processes_it_started(tmp_path):
    """A test whose worker process prints its traceback and exits (as a pipeline stage does) fails
    with only 'exited with status 1'; the part's JSON row keeps what the worker printed."""
    (tmp_path / 'test_lv_fake_worker.py').write_text(
        'import subprocess, sys\n\n\n'
        'def test_worker():\n'
        '    code = "import sys; print(\'IndexError: list index out of range (worker)\', file=sys.stderr); sys.exit(1)"\n'
        '    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "the worker exited with status 1"\n\n\n'
        'def test_fine():\n'
        '    print("ok", file=sys.stderr)\n')
    junit = str(tmp_path / 'j.xml')
    subprocess.run(gpu_check.pytest_argv(sys.executable, 'not nothing', junit, ['test_lv_fake_worker.py']),
                   cwd=str(tmp_path), capture_output=True, timeout=120)
    rows = {r['name'].split('::')[-1]: r for r in gpu_check.junit_results(junit)}
    assert rows['test_worker']['outcome'] == 'failed'
    assert 'the worker exited with status 1' in rows['test_worker']['traceback']
    assert 'IndexError: list index out of range (worker)' in rows['test_worker']['stderr']
    assert rows['test_fine']['outcome'] == 'passed' and 'stderr' not in rows['test_fine']
