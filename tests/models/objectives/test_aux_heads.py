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


def test_conv_pool_head_defaults_are_the_papers_imagenet_head():
    from localvision.models.objectives import ConvPoolHead
    head = ConvPoolHead(512, 1000)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (128, 1, 1), (256, 3, 2), (512, 3, 2), (2048, 1, 1)]
    assert head(torch.randn(2, 512, 28, 28)).shape == (2, 1000)
    with pytest.raises(ValueError, match='one entry per conv layer'):
        ConvPoolHead(8, 2, widths=(8, 8), kernels=(3,), strides=(1, 1))


@pytest.mark.parametrize('hw,size,upsampled_to', [(28, 224, 224), (14, 224, 112), (56, 56, 56), (64, 32, 64)])
def test_progressive_decoder_reduces_first_and_upsamples_only_while_coarser(hw, size, upsampled_to):
    """The papers' ImageNet decoder: conv1x1 to 128 before any upsampling (no C-channel map at the
    image size), x2 steps only while the map is smaller than the target, then a resize to it."""
    from localvision.models.objectives import ProgressiveDecoder
    dec = ProgressiveDecoder(512, 3)
    assert dec.reduce[0].out_channels == 128
    assert [m[0].out_channels if isinstance(m, nn.Sequential) else m.out_channels for m in dec.ups] == [32, 12, 3]
    seen = []
    hooks = [up.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:]))) for up in dec.ups]
    out = dec(torch.randn(1, 512, hw, hw), (size, size))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 3, size, size)
    assert seen[-1] == (3, upsampled_to, upsampled_to)
    assert all(h <= max(size, hw) for _, h, _ in seen)  # never upsampled past the target


@pytest.mark.parametrize('in_stride,target,widths', [(4, 4, (64,)), (8, 4, (64, 32)), (32, 4, (64, 32, 16, 16)),
                                                     (2, 4, (64,))])
def test_progressive_decoder_octave_widths_for_detection(in_stride, target, widths):
    from localvision.det import InfoProDet  # noqa: F401  (registers the detection objectives)
    from localvision.models.objectives import ProgressiveDecoder
    assert ProgressiveDecoder.octave_widths(64, in_stride, target) == widths
    obj = build_objective(dict(type='InfoProDet', lambda_recon=1.0, lambda_task=1.0), 256, 3, 0, 4,
                          in_stride=in_stride)
    assert obj.decoder.reduce[0].out_channels == 64 and len(obj.decoder.ups) == len(widths)
