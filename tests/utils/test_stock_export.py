"""The one export procedure (``localvision.utils.export.export``) for every task model in the
registries: each names its stock adapter, a context supply is refused for all of them (in the
config or only in the checkpoint's keys), a checkpoint that does not fit the model is one error
(localvision.utils.checkpoint.check_fits),
and nothing is written when the export is refused. The stock round trips (same predictions
without localvision) are in tests/cls/test_export.py, tests/seg/*export* and tests/det/*tools*."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from localvision.errors import InputError
from localvision.utils.export import StockExport, export

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from local_models import local_model_classes, tiny  # noqa: E402

NAMES = sorted(local_model_classes())
CONTEXT = dict(type='ContSup', variant='R1')


def config(name: str, **model) -> Config:
    t = tiny(name)
    return Config(dict(model=dict(t.cfg(2), **model), default_scope=t.scope))


def saved(cfg: Config, path) -> str:
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    with MODELS.switch_scope_and_registry(cfg.default_scope) as registry:
        model = registry.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta={}), str(path))
    return str(path)


def test_the_task_models_are_found():
    assert {'LocalImageClassifier', 'LocalEncoderDecoder', 'LocalSingleStageDetector'} <= set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_every_task_model_names_its_stock_export(name):
    exporter = local_model_classes()[name].stock_export
    assert isinstance(exporter, type) and issubclass(exporter, StockExport) and exporter.library


@pytest.mark.parametrize('name', NAMES)
def test_a_context_supply_is_refused_for_every_task(name, tmp_path):
    with_context = config(name, context=CONTEXT)
    ckpt = saved(with_context, tmp_path / 'contsup.pth')
    out = tmp_path / 'stock.pth'
    library = local_model_classes()[name].stock_export.library
    for cfg in (with_context, config(name)):  # the context in the config; only in the checkpoint's keys
        with pytest.raises(InputError, match=rf'^the model has a context supply \(model.context, ContSup\).* '
                                             rf'cannot be exported to {library}; export a model trained without'):
            export(cfg, ckpt, str(out))
    assert not out.exists()


def test_a_checkpoint_that_does_not_fit_is_one_error(tmp_path):
    ckpt = saved(config('LocalEncoderDecoder'), tmp_path / 'k2.pth')
    other = config('LocalEncoderDecoder')
    other.model.decode_head.channels = 16  # another decode head than the checkpoint's
    with pytest.raises(InputError) as e:
        export(other, ckpt, str(tmp_path / 'stock.pth'))
    msg = str(e.value)
    assert msg == (f'checkpoint {ckpt} does not fit the model of the config: 21 weights of another shape '
                   '(e.g. decode_head.conv_seg.weight); use the config it was trained with')
    assert not (tmp_path / 'stock.pth').exists()


def test_a_model_that_is_not_a_task_model_is_one_error(tmp_path):
    cfg = config('LocalEncoderDecoder')
    cfg.model.type = 'EncoderDecoder'
    with pytest.raises(InputError, match=r"^model.type='EncoderDecoder' \(default_scope='mmseg'\) is not a "
                                         r'localvision task model with an export'):
        export(cfg, 'unused.pth', str(tmp_path / 'stock.pth'))
