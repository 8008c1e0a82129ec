"""DGL's auxiliary classifier and objective."""
import torch
import torch.nn.functional as F

from localvision.models.objectives import DGLHead, LocalContext, build_objective


def test_dgl_head_shapes_and_width():
    head = DGLHead(16, 10)
    assert head(torch.randn(3, 16, 8, 8)).shape == (3, 10)
    assert head(torch.randn(3, 16, 1, 1)).shape == (3, 10)  # adaptive pool works below 2x2 too
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and convs[0].out_channels == 16
    wide = DGLHead(16, 10, width_mult=2.0, num_hidden_fc=1)
    assert [m for m in wide.modules() if isinstance(m, torch.nn.Conv2d)][0].out_channels == 32
    assert wide(torch.randn(3, 16, 8, 8)).shape == (3, 10)


def test_dgl_objective_is_cross_entropy_of_its_head():
    torch.manual_seed(0)
    obj = build_objective(dict(type='DGL'), 32, 5, 0, 3)
    assert isinstance(obj.head, DGLHead)
    feat = torch.randn(4, 32, 8, 8)
    ctx = LocalContext(inputs=torch.randn(4, 3, 32, 32), targets=torch.tensor([0, 1, 2, 4]))
    losses = obj(feat, ctx)
    assert set(losses) == {'loss_cls'}
    torch.testing.assert_close(losses['loss_cls'], F.cross_entropy(obj.head(feat), ctx.targets))


def test_unknown_aux_net_type_fails_with_the_field_and_allowed_values():
    import pytest
    with pytest.raises(ValueError, match=r"model.local_objective.head.type='DGLHeadd' is not a registered auxiliary "
                                         r"net; allowed: \[.*'DGLHead'"):
        build_objective(dict(type='DGL', head=dict(type='DGLHeadd')), 32, 5, 0, 3)
    with pytest.raises(ValueError, match=r"model.local_objective.decoder.type='Decoder' is not a registered"):
        build_objective(dict(type='InfoPro', decoder=dict(type='Decoder')), 32, 5, 0, 3)
