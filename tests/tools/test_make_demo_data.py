"""``tools/misc/make_demo_data.py``: every generator (each subcommand) writes through the one
atomic ``generate_set``, so none of them ever deletes a folder it did not make."""
import argparse
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'misc'))
import make_demo_data  # noqa: E402


def subcommands():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for add in make_demo_data.SUBCOMMANDS:
        add(sub)
    return sorted(sub.choices)


def test_the_subcommands_are_found():
    assert {'cls', 'seg', 'det', 'inst'} <= set(subcommands())


@pytest.mark.parametrize('task', subcommands())
def test_a_folder_that_is_not_a_generated_set_is_refused_and_kept(task, tmp_path, capsys):
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'precious.txt').write_text('x')
    assert make_demo_data.main([task, '--out', str(mine)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {mine} exists and is not a generated') and '\n' not in err
    assert [p.name for p in mine.iterdir()] == ['precious.txt']


@pytest.mark.parametrize('make', ['synthetic_seg.make_shapes_segmentation', 'synthetic_det.make_shapes_detection',
                                  'synthetic_inst.make_shapes_instances'])
def test_a_set_is_kept_for_the_same_arguments_and_replaced_otherwise(make, tmp_path):
    import importlib
    module, name = make.split('.')
    make = getattr(importlib.import_module(f'localvision.datasets.{module}'), name)
    small = dict(num_train=2, num_val=1, image_size=32)
    root = make(tmp_path / 'set', **small)
    marker = root / 'marker.txt'
    marker.write_text('kept while the arguments are unchanged')
    make(tmp_path / 'set', **small)
    assert marker.exists()
    make(tmp_path / 'set', **small, overwrite=True)
    assert not marker.exists()
    marker.write_text('x')
    make(tmp_path / 'set', **dict(small, num_train=3))
    assert not marker.exists()
    assert [p.name for p in tmp_path.iterdir()] == ['set']  # no temporary folder left
