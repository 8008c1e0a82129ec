"""LowMemFocalLoss equals mmdet's FocalLoss (values and gradients) while keeping only its inputs."""
import pytest
import torch
from mmdet.models.losses import FocalLoss

from localvision.det.losses import LowMemFocalLoss


@pytest.mark.parametrize('with_weight', [False, True])
@pytest.mark.parametrize('avg_factor', [None, 57.0])
def test_same_values_and_gradients_as_mmdet(with_weight, avg_factor):
    g = torch.Generator().manual_seed(0)
    n, c = 5000, 11  # several chunks
    x = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, c + 1, (n,), generator=g)  # c = background
    w = torch.rand(n, generator=g, dtype=torch.float64) if with_weight else None
    ref = FocalLoss(loss_weight=0.7)(x, y, w, avg_factor=avg_factor)
    (g_ref,) = torch.autograd.grad(ref, x)
    ours = LowMemFocalLoss(loss_weight=0.7)(x, y, w, avg_factor=avg_factor)
    (g_ours,) = torch.autograd.grad(ours, x)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-9)


def test_keeps_only_its_inputs_for_backward():
    from localvision.utils.memory import LiveTensorMemoryTracker
    x = torch.randn(20000, 80, requires_grad=True)
    y = torch.randint(0, 81, (20000,))
    peaks = {}
    for name, loss in (('mmdet', FocalLoss()), ('lowmem', LowMemFocalLoss())):
        with LiveTensorMemoryTracker(baseline=(x, y)) as tr:
            out = loss(x, y, avg_factor=100.0)
            kept = tr.current_bytes - tr.baseline_bytes
        peaks[name] = kept
        out.backward()
    assert peaks['lowmem'] < 0.05 * peaks['mmdet']  # one 6.4 MB input vs ~7 temporaries of its size
