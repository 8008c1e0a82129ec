"""``check_fits`` / ``read_state_dict`` (localvision/utils/checkpoint.py) for every task model in the
registries: what tools/test.py, --resume and the export accept as the checkpoint of a config's model."""
import os.path as osp
import sys

import pytest
import torch

from localvision.errors import InputError
from localvision.utils.checkpoint import check_fits, read_state_dict

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from local_models import build, local_model_classes  # noqa: E402

NAMES = sorted(local_model_classes())


@pytest.mark.parametrize('name', NAMES)
def test_the_auxiliary_nets_aside_a_checkpoint_fits_across_k(name, tmp_path):
    local, e2e = build(name, 2), build(name, 1)
    assert any(k.startswith('objectives.') for k in local.state_dict())
    torch.save(dict(state_dict={f'module.{k}': v for k, v in e2e.state_dict().items()}, meta={}), tmp_path / 'e2e.pth')
    state = read_state_dict(str(tmp_path / 'e2e.pth'))[1]  # a wrapped model's prefix removed
    check_fits(local, state, 'e2e.pth')  # an E2E checkpoint predicts with the K=2 config, and back
    check_fits(e2e, local.state_dict(), 'local.pth')
    with pytest.raises(InputError, match=r'^checkpoint e2e.pth does not fit the model of the config: \d+ weights of the '
                                         r'model missing \(e.g. objectives\.'):
        check_fits(local, state, 'e2e.pth', ignore=())  # resuming needs the auxiliary nets too


@pytest.mark.parametrize('name', NAMES)
def test_a_missing_an_extra_and_a_reshaped_weight_are_named(name):
    model = build(name, 2)
    state = dict(model.state_dict())
    keys = [k for k, v in state.items() if k.startswith('backbone.') and v.dim() == 4]
    del state[keys[0]]
    state['backbone.extra.weight'] = torch.zeros(1)
    state[keys[1]] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(InputError) as e:
        check_fits(model, state, 'x.pth')
    assert str(e.value) == (f'checkpoint x.pth does not fit the model of the config: 1 weights of the model missing '
                            f'(e.g. {keys[0]}), 1 weights the model lacks (e.g. backbone.extra.weight), 1 weights of '
                            f'another shape (e.g. {keys[1]}); use the config it was trained with')
