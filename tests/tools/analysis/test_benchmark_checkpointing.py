"""The benchmark's checkpointing and mixed-precision variants on a tiny model."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import benchmark_memory  # noqa: E402
import gpu_check  # noqa: E402


def test_checkpointing_variants_side_by_side_under_bf16(tmp_path, capsys):
    config = gpu_check.write_config(str(tmp_path / 'cfg.py'), gpu_check.cls_config(**dict(
        gpu_check.CLS_MODELS['resnet110'][1], num_modules=4,
        objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1)))))
    results = benchmark_memory.run([config, '--ks', '1', '4', '--checkpoint-ks', '--amp', '--batch-size', '16',
                                    '--iters', '1', '--device', 'cpu', '--out-dir', str(tmp_path)])
    assert 'precision=bfloat16' in capsys.readouterr().out
    by = {r['name']: r for r in results}
    assert list(by) == ['E2E', 'E2E + ckpt', 'K=4', 'K=4 + ckpt']
    assert [r['grad_checkpointing'] for r in results] == [False, True, False, True]
    assert all(r['precision'] == 'bfloat16' for r in results)
    assert by['E2E + ckpt']['peak_bytes'] < by['E2E']['peak_bytes']
    assert by['K=4 + ckpt']['peak_bytes'] < by['K=4']['peak_bytes'] < by['E2E']['peak_bytes']
    assert json.loads((tmp_path / 'benchmark.json').read_text())['meta']['amp'] is True


def test_channels_last_variants_side_by_side(tmp_path):
    """``--channels-last-ks``: "E2E channels-last" and "K=4 channels-last" beside the plain ones,
    with the same exact peak memory (the layout changes strides, not bytes)."""
    config = gpu_check.write_config(str(tmp_path / 'cfg.py'), gpu_check.cls_config(**dict(
        gpu_check.CLS_MODELS['resnet110'][1], num_modules=4,
        objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1)))))
    results = benchmark_memory.run([config, '--ks', '1', '4', '--channels-last-ks', '--batch-size', '16',
                                    '--iters', '1', '--device', 'cpu', '--out-dir', str(tmp_path)])
    by = {r['name']: r for r in results}
    assert list(by) == ['E2E', 'E2E channels-last', 'K=4', 'K=4 channels-last']
    assert [r['channels_last'] for r in results] == [False, True, False, True]
    for name in ('E2E', 'K=4'):
        assert abs(by[f'{name} channels-last']['peak_bytes'] - by[name]['peak_bytes']) <= 0.02 * by[name]['peak_bytes']
