"""``--variant`` overrides of benchmark_memory.py: values that are tuples or lists, and bad values."""
import json
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import benchmark_memory  # noqa: E402
import gpu_check  # noqa: E402

CIFAR = gpu_check.CLS_MODELS['resnet110'][1]  # cifar_resnet20, Greedy ConvFCHead, SGD


def test_overrides_split_at_the_commas_outside_brackets_and_quotes():
    split = benchmark_memory.split_overrides
    assert split('a=1,b.c=(8,16,32),d=[1,[2,3]],e="x,y"') == ['a=1', 'b.c=(8,16,32)', 'd=[1,[2,3]]', 'e="x,y"']
    assert split('model.local_objective.type=DGL') == ['model.local_objective.type=DGL']
    assert split('a=1,') == ['a=1']


@pytest.mark.slow  # trains a step
def test_a_tuple_valued_variant_builds_that_model_and_a_bad_one_is_one_error_line(tmp_path, capsys):
    cfg = gpu_check.write_config(str(tmp_path / 'cfg.py'), gpu_check.cls_config(**dict(CIFAR, num_modules=2,
                                                                                       strategy='equal')))
    opts = ['--ks', '2', '--batch-size', '4', '--iters', '0', '--out-dir', str(tmp_path),
            '--cfg-options', 'model.head.num_classes=10']
    benchmark_memory.run([cfg, '--variant', 'thin:model.backbone.widths=(8,16,32),model.split.num_modules=2'] + opts)
    results = {r['name']: r for r in json.loads((tmp_path / 'benchmark.json').read_text())['results']}
    assert '64 ch' in results['K=2']['split'] and '64 ch' not in results['thin']['split']  # half the widths
    assert '16 ch' in results['thin']['split'] and '32 ch' in results['thin']['split']
    assert results['thin']['peak_bytes'] < results['K=2']['peak_bytes']
    # a value the backbone refuses (two widths for three stages): one error line, no traceback
    with pytest.raises(SystemExit, match=r"error: variant 'bad': .*three stage widths"):
        benchmark_memory.run([cfg, '--variant', 'bad:model.backbone.widths=(8,16)'] + opts)
