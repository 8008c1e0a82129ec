"""InfoPro: the image target, the lambda schedule, both task terms, and lambda=0 terms."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.model import ImgDataPreprocessor

from localvision.models.objectives import (InfoPro, LocalContext, build_objective, pixel_stats,
                                           scheduled_value, supervised_contrastive_loss)
from mmpretrain.structures import DataSample


def make_ctx(n=8, num_classes=4, hw=(16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (n, 3, *hw), generator=g).float()
    mean = torch.tensor([120.0, 110.0, 100.0]).view(3, 1, 1)
    std = torch.tensor([60.0, 50.0, 40.0]).view(3, 1, 1)
    targets = torch.arange(n) % num_classes
    return LocalContext(inputs=(img - mean) / std, targets=targets, img_hw=hw, pixel_mean=mean, pixel_std=std), img


@pytest.mark.parametrize('bgr_to_rgb', [False, True])
def test_image01_undoes_the_preprocessor_whatever_its_mean_std_and_channel_order(bgr_to_rgb):
    pre = ImgDataPreprocessor(mean=[10.0, 128.0, 200.0], std=[30.0, 2.0, 90.0], bgr_to_rgb=bgr_to_rgb)
    raw = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8) for _ in range(3)]
    data = pre(dict(inputs=raw, data_samples=[DataSample().set_gt_label(0)] * 3), True)
    mean, std = pixel_stats(pre)
    ctx = LocalContext(inputs=data['inputs'], pixel_mean=mean, pixel_std=std)
    expected = torch.stack([r[[2, 1, 0]] if bgr_to_rgb else r for r in raw]).float() / 255
    torch.testing.assert_close(ctx.image01(), expected, rtol=0, atol=1e-5)
    assert ctx.image01() is ctx.image01()  # computed once per batch
    assert not ctx.image01().requires_grad


def test_image01_without_normalisation_and_clamping():
    assert pixel_stats(ImgDataPreprocessor()) == (None, None)
    ctx = LocalContext(inputs=torch.tensor([-20.0, 0.0, 127.5, 300.0]).view(1, 1, 2, 2))
    torch.testing.assert_close(ctx.image01().flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def test_lambda_schedule_first_last_interpolated_or_per_module():
    # ResNet-32, K=4: (lambda1, lambda2) = (6, 0) first, (1, 2) last local module
    got = [(scheduled_value((6, 1), k, 4, 'r'), scheduled_value((0, 2), k, 4, 't')) for k in range(3)]
    assert got == [(6.0, 0.0), (3.5, 1.0), (1.0, 2.0)]
    assert scheduled_value((5, 0), 0, 2, 'r') == 5.0  # K=2: the first value
    assert [scheduled_value([1, 2, 3, 4], k, 5, 'r') for k in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert scheduled_value(0.3, 2, 8, 'r') == 0.3
    with pytest.raises(ValueError, match=r'lam has 3 values but the split has 4 local modules'):
        scheduled_value([1, 2, 3], 0, 5, 'lam')


def test_shapes_keys_and_value_match_a_direct_computation():
    torch.manual_seed(0)
    ctx, img = make_ctx()
    obj = InfoPro(16, 4, loss_mode='softmax', lambda_recon=(6, 1), lambda_task=(0, 2), module_index=1,
                           num_modules=4)
    assert (obj.lambda_recon, obj.lambda_task) == (3.5, 1.0)
    feat = torch.randn(8, 16, 4, 4)
    logits = obj.decoder(feat, ctx.img_hw)
    assert logits.shape == (8, 3, 16, 16)
    losses = obj(feat, ctx)
    assert set(losses) == {'loss_recon', 'loss_cls'}
    recon = F.binary_cross_entropy(torch.sigmoid(obj.decoder(feat, ctx.img_hw)), img / 255)
    torch.testing.assert_close(losses['loss_recon'], 3.5 * recon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses['loss_cls'], 1.0 * F.cross_entropy(obj.head(feat), ctx.targets))


def test_lambda_zero_terms_are_not_built_and_contribute_nothing():
    torch.manual_seed(0)
    ctx, _ = make_ctx()
    recon_only = InfoPro(16, 4, lambda_recon=2.0, lambda_task=0.0)
    task_only = InfoPro(16, 4, loss_mode='contrast', lambda_recon=0.0, lambda_task=0.5)
    assert recon_only.head is None and task_only.decoder is None
    feat = torch.randn(8, 16, 4, 4, requires_grad=True)
    losses = recon_only(feat, ctx)
    assert set(losses) == {'loss_recon'}
    g, = torch.autograd.grad(losses['loss_recon'], feat)
    direct = 2.0 * F.binary_cross_entropy_with_logits(recon_only.decoder(feat, ctx.img_hw), ctx.image01())
    g_direct, = torch.autograd.grad(direct, feat)
    torch.testing.assert_close(g, g_direct)
    assert set(task_only(feat, ctx)) == {'loss_contrast'}
    with pytest.raises(ValueError, match=r'local module 2 of K=4 gets lambda_recon = lambda_task = 0'):
        InfoPro(16, 4, lambda_recon=(1, 0), lambda_task=(0, 0), module_index=2, num_modules=4)


def direct_supcon(z, labels, t):
    """SupCon written out anchor by anchor, positive by positive."""
    n, terms = z.shape[0], []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / t) for a in range(n) if a != i)
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / t) / denom) for p in pos) / len(pos))
    return sum(terms) / len(terms)


@pytest.mark.parametrize('t', [0.07, 0.5])
def test_contrastive_loss_matches_a_direct_computation(t):
    torch.manual_seed(0)
    z = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # class 3 has no positive: that anchor is skipped
    torch.testing.assert_close(supervised_contrastive_loss(z, labels, t), direct_supcon(z, labels, t).float())
    none = supervised_contrastive_loss(z.float().requires_grad_(), torch.arange(7), t)
    assert none.item() == 0.0 and none.requires_grad


def test_contrast_mode_uses_an_l2_normalised_projection_and_the_temperature():
    torch.manual_seed(0)
    ctx, _ = make_ctx()
    obj = InfoPro(16, 4, loss_mode='contrast', lambda_recon=0.0, lambda_task=1.5, proj_dim=32,
                           temperature=0.2)
    feat = torch.randn(8, 16, 4, 4)
    assert obj.head(feat).shape == (8, 32)
    z = F.normalize(obj.head(feat), dim=1)
    torch.testing.assert_close(obj(feat, ctx)['loss_contrast'], 1.5 * direct_supcon(z, ctx.targets, 0.2),
                               rtol=1e-5, atol=1e-6)


def test_width_mult_widens_the_aux_nets_and_bad_options_fail_clearly():
    def n_params(**kw):
        return sum(p.numel() for p in InfoPro(32, 10, **kw).parameters())
    assert n_params(width_mult=2.0) > n_params()
    obj = build_objective(dict(type='InfoPro', lambda_recon=1, lambda_task=1), 64, 10, 0, 2)
    assert obj.head.conv.out_channels == 64  # "1c2f" conv scales with the module's channels
    with pytest.raises(ValueError, match=r"loss_mode='softmx' is unknown; allowed: \['softmax', 'contrast'\]"):
        InfoPro(16, 4, loss_mode='softmx')
