"""tools/analysis/seg_quality.py: local objectives vs E2E over seeds, mean ± std, resumable."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import seg_quality  # noqa: E402


def test_seg_quality_runs_every_config_and_seed_and_resumes(tmp_path, capsys):
    from localvision.datasets.synthetic_seg import make_shapes_segmentation
    root = make_shapes_segmentation(tmp_path / 'set', num_train=4, num_val=2, image_size=64, seed=0)
    # 6 iterations: the demo configs' PeakMemoryHook measures iteration 5
    args = ['--runs', 'greedy K=4=configs/seg/deeplab_greedy_k4_demo.py', 'E2E=configs/seg/deeplab_e2e_demo.py',
            '--seeds', '0', '1', '--iters', '6', '--data-root', str(root), '--out-dir', str(tmp_path / 'out')]
    summary = seg_quality.run(args)
    assert [r['name'] for r in summary] == ['greedy K=4', 'E2E']
    for r in summary:
        assert r['seeds'] == [0, 1] and len(r['mIoU_per_seed']) == 2
        assert 0 <= r['mIoU'] <= 100 and r['mIoU_std'] >= 0 and r['peak_bytes'] > 0
    assert summary[0]['peak_bytes'] < summary[1]['peak_bytes']  # K=4 keeps one module's graph at a time
    assert osp.isfile(tmp_path / 'out' / 'runs' / 'greedy_k_4_s1' / 'iter_6.pth')
    data = json.loads((tmp_path / 'out' / 'seg_quality.json').read_text())
    assert len(data['results']) == 4 and (tmp_path / 'out' / 'seg_quality.png').stat().st_size > 5_000
    assert '±' in capsys.readouterr().out
    seg_quality.run(args)  # everything saved: nothing trains again
    assert capsys.readouterr().out.count('saved in') == 4


def test_seg_quality_refuses_a_bad_run_spec(tmp_path):
    with pytest.raises(SystemExit):
        seg_quality.parse_args(['--runs', 'configs/seg/deeplab_e2e_demo.py'])
    with pytest.raises(SystemExit):
        seg_quality.parse_args(['--runs', 'x=configs/seg/nope.py'])
