import pytest
import timm
import torch

from localvision.models.backbones import CifarResNet


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('depth, blocks, millions', [(32, 5, 0.46), (110, 18, 1.73)])
def test_structure_and_param_count(depth, blocks, millions):
    model = CifarResNet(depth, num_classes=10)
    assert [len(getattr(model, f'layer{i}')) for i in (1, 2, 3)] == [blocks] * 3
    assert _params(model) / 1e6 == pytest.approx(millions, abs=0.02)
    assert model.num_features == 64 and model.num_classes == 10
    assert [f['module'] for f in model.feature_info] == ['act1', 'layer1', 'layer2', 'layer3']
    assert [(f['num_chs'], f['reduction']) for f in model.feature_info] == [(16, 1), (16, 1), (32, 2), (64, 4)]


def test_forward_shapes_and_classifier():
    model = CifarResNet(20, num_classes=7, drop_rate=0.1).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 8, 8)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert model(x).shape == (2, 7)
    assert model.get_classifier() is model.fc
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)


def test_timm_create_model():
    model = timm.create_model('cifar_resnet110', num_classes=10, pretrained=False)
    assert isinstance(model, CifarResNet) and len(model.layer3) == 18
    assert model.pretrained_cfg['input_size'] == (3, 32, 32)
    assert {'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56'} <= set(
        timm.list_models('cifar_resnet*'))
    assert timm.create_model('cifar_resnet20', in_chans=1)(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_timm_features_only():
    model = timm.create_model('cifar_resnet20', features_only=True)
    shapes = [tuple(f.shape[1:]) for f in model(torch.randn(1, 3, 32, 32))]
    assert shapes == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert timm.create_model('cifar_resnet20', features_only=True, out_indices=(3,)).feature_info.channels() == [64]


def test_no_pretrained_weights_and_bad_depth():
    with pytest.raises(RuntimeError, match='no pretrained weights'):
        timm.create_model('cifar_resnet32', pretrained=True)
    with pytest.raises(ValueError, match='6n \\+ 2'):
        CifarResNet(depth=33)
