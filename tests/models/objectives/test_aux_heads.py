"""Auxiliary nets as in the papers' code: the 1c2f head's widths, He fan-out initialisation."""
import pytest
import torch
import torch.nn as nn

from localvision.models.objectives import ConvFCHead, build_objective


@pytest.mark.parametrize('c,conv_out,stride', [(16, 32, 2), (32, 64, 2), (64, 64, 1), (256, 256, 1)])
def test_conv_fc_head_widens_thin_maps_as_the_papers_code(c, conv_out, stride):
    head = ConvFCHead(c, 10)
    assert (head.conv.out_channels, head.conv.stride[0], head.fc1.out_features) == (conv_out, stride, 128)
    assert head(torch.randn(2, c, 8, 8)).shape == (2, 10)
    assert ConvFCHead(32, 10, conv_channels=32).conv.out_channels == 32  # the narrower head, as an option


def test_objectives_start_from_he_fan_out_initialisation():
    torch.manual_seed(0)
    obj = build_objective(dict(type='InfoPro', lambda_recon=1.0, lambda_task=1.0), 32, 10, 0, 4)
    convs = [m for m in obj.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 3
    for m in convs:
        k = m.kernel_size[0] * m.kernel_size[1]
        want = (2.0 / (k * m.out_channels)) ** 0.5
        if m.weight.numel() >= 500:  # enough weights for the standard deviation
            assert abs(m.weight.std().item() - want) < 0.15 * want
    bns = [m for m in obj.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in bns)


def test_a_net_with_its_own_initialisation_keeps_it():
    from localvision.det import InfoProDet  # noqa: F401  (registers the detection objectives)
    obj = build_objective(dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0), 64, 3, 0, 4, in_stride=8)
    prior = torch.full_like(obj.head.cls.bias, -torch.log(torch.tensor(99.0)).item())
    torch.testing.assert_close(obj.head.cls.bias, prior)
    assert obj.head.cls.weight.std().item() < 0.02
