"""tools/seg_demo.py: both runs train, mIoU and peak memory (PeakMemoryHook) side by side."""
import json
import os.path as osp
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_seg_demo_prints_miou_and_memory_of_both_runs(tmp_path):
    from localvision.datasets.synthetic_seg import make_shapes_segmentation
    root = make_shapes_segmentation(tmp_path / 'set', num_train=8, num_val=4, image_size=64, seed=0)
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'seg_demo.py'), '--iters', '6',
                           '--data-root', str(root), '--work-dir', str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert '[K=4 InfoPro]' in out and '[E2E]' in out and 'peak training memory (iteration 5)' in out
    summary = json.loads((work / 'summary.json').read_text())
    local, e2e = summary['results']['K=4 InfoPro'], summary['results']['E2E']
    assert 0 <= local['metrics']['mIoU'] <= 100 and 0 <= e2e['metrics']['mIoU'] <= 100
    assert local['peak_bytes'] < e2e['peak_bytes']
    assert json.loads((work / 'local_k4' / 'peak_memory.json').read_text())['peak_bytes'] == local['peak_bytes']
    assert osp.isfile(work / 'local_k4' / 'iter_6.pth')


def test_seg_demo_names_a_failed_run(tmp_path):
    from localvision.datasets.synthetic_seg import make_shapes_segmentation
    root = make_shapes_segmentation(tmp_path / 'set', num_train=2, num_val=1, image_size=64, seed=0)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'seg_demo.py'), '--iters', '6', '--jobs', '1',
                           '--data-root', str(root), '--work-dir', str(tmp_path / 'w'),
                           '--local-config', 'configs/seg/nope.py'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert '[K=4 InfoPro] failed (exit' in proc.stderr and 'nope.py' in proc.stderr
    assert '[E2E]' not in proc.stdout  # one after the other: stopped at the first failure
