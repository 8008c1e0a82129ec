"""The GPU check's plumbing on the CPU: classification without OpenMMLab's task packages, the
offline wheel install, skips, timeouts and the JSON (tools/analysis/gpu_check.py)."""
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


def test_classification_trains_without_mmcv_mmseg_mmdet_mmpretrain(tmp_path):
    """A K=2 LocalImageClassifier builds and trains a step where none of them can be imported."""
    result = tmp_path / 'r.json'
    out = subprocess.run([sys.executable, PARTS, 'cls_without_mmcv', '--result', str(result), '--device', 'cpu'],
                         env=blocked_env(tmp_path, gpu_check.OPENMMLAB), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(result.read_text())['figures']
    assert figures['openmmlab_imported'] == [] and figures['mmcv_importable'] is False
    assert figures['units_changed'] == '2/2' and figures['transforms_parent_scope'] == 'mmengine'


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
def test_cpu_dry_run_with_openmmlab_blocked_writes_one_json(tmp_path):
    report, out = run_check(tmp_path, '--block', *gpu_check.OPENMMLAB, '--parts', 'install_wheels', 'device',
                            'cls_without_mmcv', 'pytest_gpu', 'amp_seg', 'amp_det', 'pipeline_cuda')
    parts = report['parts']
    assert report['finished'] and report['mode'].startswith('cpu dry run')
    assert list(parts) == ['install_wheels', 'device', 'cls_without_mmcv', 'pytest_gpu', 'amp_seg', 'amp_det',
                           'pipeline_cuda']
    assert parts['install_wheels']['figures']['installed'] == ['lvgpucheckfake-1.0-py3-none-any.whl']
    assert (tmp_path / 'env' / 'site' / 'lvgpucheckfake' / '__init__.py').exists()
    assert parts['device']['figures']['importable']['mmcv'] is False
    assert parts['cls_without_mmcv']['status'] == 'ok'
    assert parts['cls_without_mmcv']['figures']['openmmlab_imported'] == []
    assert parts['pytest_gpu']['status'] == 'ok' and parts['pytest_gpu']['figures']['counts']['skipped'] >= 3
    assert parts['amp_seg'] == dict(status='skipped', seconds=0.0, figures={}, notes=[], reason='mmcv and mmseg absent')
    assert parts['amp_det']['reason'] == 'mmcv and mmdet absent'
    assert parts['pipeline_cuda']['status'] == 'skipped' and parts['pipeline_cuda']['reason'].startswith('mmcv absent')
    assert report['summary'] == dict(ok=4, failed=0, skipped=3)
    assert 'install_wheels: ok' in (out / 'gpu_check.log').read_text()


def test_a_part_that_times_out_fails_and_the_parts_after_it_skip(tmp_path):
    report, _ = run_check(tmp_path, '--parts', 'device', 'cls_without_mmcv', '--timeout-scale', '0.01')
    device, cls = report['parts']['device'], report['parts']['cls_without_mmcv']
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
