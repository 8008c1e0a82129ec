"""benchmark_memory.py on a segmentation config with a real batch from the train dataloader."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import benchmark_memory  # noqa: E402

CONFIG = osp.join(ROOT, 'configs/seg/deeplab_infopro_k4_demo.py')


def test_seg_benchmark_with_loader_batch(tmp_path):
    from localvision.datasets.synthetic_seg import make_shapes_segmentation
    root = make_shapes_segmentation(tmp_path / 'set', num_train=4, num_val=1, image_size=64, seed=0)
    benchmark_memory.run([CONFIG, '--ks', '1', '4', '--data', 'loader', '--batch-size', '2', '--iters', '1',
                          '--strategy', 'equal', '--out-dir', str(tmp_path / 'out'), '--cfg-options',
                          f'train_dataloader.dataset.data_root={root}', 'model.decode_head.channels=16',
                          'model.local_objective.head.channels=16'])
    data = json.loads((tmp_path / 'out' / 'benchmark.json').read_text())
    assert data['meta']['data'] == 'loader' and data['meta']['input_size'] == [3, 64, 64]
    by = {r['name']: r for r in data['results']}
    assert set(by) == {'E2E', 'K=4'}
    # the thin demo backbone: activations dominate even at 64x64, batch 2
    assert by['K=4']['peak_bytes'] < 0.9 * by['E2E']['peak_bytes']
    assert by['K=4']['k'] == 4 and by['E2E']['k'] == 1
