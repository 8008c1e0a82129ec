"""The README's "turn your config local" snippets: each loads with its stock base, builds the local
model the README says, and trains one step on a small batch."""
import copy
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def snippets():
    text = open(osp.join(ROOT, 'README.md')).read()
    section = text.split('## Turn your config local', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, re.S)


def test_the_readme_shows_a_segmentation_and_a_classification_snippet():
    found = snippets()
    assert len(found) == 2 and 'mmseg::' in found[0] and 'mmpretrain::' in found[1]
    for code in found:
        assert len(code.strip().splitlines()) <= 6  # a few lines on top of the stock config


def seg_batch(size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, size, size)))
        ds.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(ds)
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)


def cls_batch(size=64):
    from mmpretrain.structures import DataSample
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])


@pytest.mark.slow  # builds ResNet-50s and profiles their split
@pytest.mark.parametrize('index,scope,kind', [(0, 'mmseg', 'LocalEncoderDecoder'), (1, 'mmpretrain', 'LocalImageClassifier')])
def test_readme_snippet_builds_and_trains_a_step(index, scope, kind, tmp_path):
    from mmengine.registry import MODELS, init_default_scope
    path = tmp_path / 'local.py'
    path.write_text(snippets()[index])
    cfg = Config.fromfile(str(path))
    assert cfg.model.type == kind
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.split['input_size'] = (3, 64, 64)  # a small profiling dry run
    if scope == 'mmseg':  # SyncBN needs a process group; plain BN on one CPU process
        for head in ('decode_head', 'auxiliary_head'):
            model_cfg[head]['norm_cfg'] = dict(type='BN', requires_grad=True)
        model_cfg.data_preprocessor['size'] = (64, 64)
    init_default_scope(scope)
    with MODELS.switch_scope_and_registry(scope) as registry:
        model = registry.build(model_cfg)
    assert model.num_units == 4
    batch = seg_batch() if scope == 'mmseg' else cls_batch()
    log = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert all(torch.isfinite(v).all() for v in log.values())
    assert any(k.startswith('m2.') for k in log)  # the local objective of module 2 trained
