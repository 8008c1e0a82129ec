"""The calibration tool on a tiny relational set: random-network and pixel probes, JSON written."""
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import calibrate_benchmark  # noqa: E402


def test_calibration_probes_write_json(tmp_path):
    from localvision.datasets.relational import make_relational_classification
    root = make_relational_classification(tmp_path / 'rel', train_per_class=6, val_per_class=3, seed=0)
    out = calibrate_benchmark.run(['--data-root', str(root), '--init-seeds', '0', '--steps', '20',
                                   '--head-epochs', '1', '--out', str(tmp_path / 'cal.json')])
    saved = json.loads((tmp_path / 'cal.json').read_text())
    assert saved['summary'] == out['summary'] and saved['n_train'] == 48 and saved['n_val'] == 24
    assert abs(saved['chance_top1'] - 12.5) < 1e-6
    assert 'random_m0_mean_best_val_top1' in saved['summary'] and 'head_m0_mean_val_top1' in saved['summary']
    assert all(0 <= v <= 100 for v in saved['summary'].values())
