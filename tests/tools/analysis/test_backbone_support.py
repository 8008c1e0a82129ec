"""tools/analysis/backbone_support.py: one model checked (K=2 / K=4 equal forward_features, one
local step), refusals recorded with their reason, the table written from the results."""
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import backbone_support  # noqa: E402


def test_one_model_is_checked_and_a_refusal_keeps_its_reason(tmp_path):
    ok = backbone_support.check_one('regnetx_002', 256)
    assert ok['supported'] and ok['k2'] and ok['k4'] and ok['train'] and ok['input'] == [3, 64, 64]
    assert ok['blocks'] >= 4
    refused = backbone_support.check_one('hrnet_w18_small', 256)
    assert not refused['supported'] and 'parallel branches' in refused['note']
    rows = [dict(ok, architecture='regnet'), dict(refused, architecture='hrnet')]
    md = backbone_support.write_tables(rows, str(tmp_path))
    assert md.startswith('1 of 2 timm architecture modules split')
    assert '| regnet | `regnetx_002` | yes |' in md and '| hrnet | `hrnet_w18_small` | no |' in md
    saved = json.load(open(tmp_path / 'backbone_support.json'))
    assert saved['supported'] == 1 and saved['total'] == 2


def test_the_smallest_named_model_of_a_module_is_picked():
    picks = backbone_support.pick_models(['regnet', 'vision_transformer'])
    assert picks['regnet'] == 'regnetx_002'
    assert not any(w in picks['vision_transformer'] for w in ('large', 'huge', 'giant'))
