"""Correctness of the live-tensor memory tracker (exact byte counts, real torch, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localvision.utils.memory import LiveTensorMemoryTracker, format_bytes, measure_peak_memory

MiB = 1 << 20
F32 = 4  # bytes per float32


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_known_allocation_pattern_and_baseline() -> None:
    w = torch.zeros(1000)  # 4000 B baseline
    with LiveTensorMemoryTracker(baseline=[w]) as tr:
        assert tr.baseline_bytes == 4000 and tr.current_bytes == 4000
        a = torch.empty(MiB, dtype=torch.uint8) * 0 + 1  # temporaries freed at once
        del a
        assert tr.current_bytes == 4000 and tr.peak_bytes == 4000 + 2 * MiB
        a = torch.empty(4 * MiB, dtype=torch.uint8)
        b = torch.empty(8 * MiB, dtype=torch.uint8)
        del a
        c = torch.empty(2 * MiB, dtype=torch.uint8)
        assert tr.current_bytes == 4000 + 10 * MiB
    assert tr.peak_bytes == 4000 + 12 * MiB
    assert tr.peak_by_device == {"cpu": 4000 + 12 * MiB}
    assert tr.baseline_by_device == {"cpu": 4000}
    del b, c  # frees after exit are still subtracted
    assert tr.current_bytes == 4000


def test_views_inplace_and_dropped_storage_objects_are_not_counted_twice() -> None:
    with LiveTensorMemoryTracker() as tr:
        a = torch.ones(256, 256)
        n = _nbytes(a)
        views = [a.view(-1), a[::2], a.t(), a.detach(), a.reshape(256, 256), a.as_strided((4,), (1,)), a.unsqueeze(0)]
        a.add_(1).mul_(2)
        a[3:5] = 7.0  # the Python scalar becomes a transient 4-byte tensor (lift_fresh)
        torch.add(a, a, out=a)
        s = a.untyped_storage()  # Python storage object dropped while the tensor lives
        del s
        assert tr.current_bytes == n
        del a
        assert tr.current_bytes == n  # the views keep the storage alive
        del views
        assert tr.current_bytes == 0
    assert tr.peak_bytes == n + 4


def test_resize_and_out_variants_are_recounted() -> None:
    with LiveTensorMemoryTracker() as tr:
        a = torch.empty(0)
        assert tr.current_bytes == 0
        a.resize_(1000)
        assert tr.current_bytes == 4000
        out = torch.empty(0)
        torch.mul(a, 2, out=out)  # out= resizes its argument
        assert tr.current_bytes == 8000
        del a, out
    assert tr.current_bytes == 0 and tr.peak_bytes == 8000


def _exp_chain(x: torch.Tensor, k: int) -> torch.Tensor:
    for _ in range(k):
        x = x.exp()  # ExpBackward saves its result, not its input
    return x


def test_local_backward_frees_earlier_than_joint_backward() -> None:
    """Two gradient-isolated modules; each is ``k`` exps (each saving one activation).

    All tensors have ``B`` bytes except the scalar losses (4 B). Module 1 is
    ``exp^k(w1 * 0.5)``, module 2 is ``exp^k(h.detach() * w2)``; baseline is w1, w2 (2B).

    * joint (``(l1 + l2).backward()``): the forward ends with 2B + k saved (module 1,
      including h) + k saved (module 2) and 3 scalars (l1, l2, l1 + l2); the backward
      adds the ones-like scalar and the first gradient buffer (B): 2k + 3 B + 16.
    * local (backward of module 1 before forward of module 2): module 1 peaks at
      2B + k + 1; then w1.grad and h (saved by module 2's mul) stay alive, so module 2
      peaks at 2B + 2 + k + 1 with 2 scalars (its loss, the ones-like grad): k + 5 B + 8.
    """
    k, n = 4, 1 << 16
    B = n * F32
    w1 = nn.Parameter(torch.rand(n) * 0.1)
    w2 = nn.Parameter(torch.rand(n) * 0.1)

    with LiveTensorMemoryTracker(baseline=(w1, w2)) as joint:
        h = _exp_chain(w1 * 0.5, k)
        l1, l2 = h.sum(), _exp_chain(h.detach() * w2, k).sum()
        del h
        (l1 + l2).backward()
        del l1, l2
    assert joint.baseline_bytes == 2 * B
    assert joint.peak_bytes == (2 * k + 3) * B + 4 * 4
    assert joint.current_bytes == 4 * B  # params + grads
    grads = w1.grad.clone(), w2.grad.clone()

    w1.grad = w2.grad = None
    with LiveTensorMemoryTracker(baseline=(w1, w2)) as local:
        h = _exp_chain(w1 * 0.5, k)
        h.sum().backward()
        h = h.detach()
        _exp_chain(h * w2, k).sum().backward()
        del h
    assert local.peak_bytes == (k + 5) * B + 2 * 4
    assert joint.peak_bytes - local.peak_bytes == (k - 2) * B + 8
    assert local.current_bytes == 4 * B
    torch.testing.assert_close((w1.grad, w2.grad), grads)


def test_mlp_saved_activations_and_grads_are_exact() -> None:
    torch.manual_seed(0)
    batch, d_in, hidden, d_out = 8, 16, 32, 4
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    x = torch.randn(batch, d_in)
    param_bytes = _nbytes(*model.parameters())
    with LiveTensorMemoryTracker(baseline=(model, x)) as tr:
        assert tr.baseline_bytes == param_bytes + _nbytes(x)
        loss = model(x).pow(2).sum()
        # alive: ReLU output (saved by ReLU and by the 2nd Linear), the 2nd Linear's
        # output (saved by pow), the loss; the 1st Linear's output was freed by ReLU.
        saved = (batch * hidden + batch * d_out + 1) * F32
        assert tr.current_bytes == tr.baseline_bytes + saved
        # forward peak: the 1st Linear's output and the ReLU output coexist
        assert tr.peak_bytes == tr.baseline_bytes + 2 * batch * hidden * F32
        loss.backward()  # gradients created by autograd (incl. AccumulateGrad) are seen
        del loss
    assert tr.current_bytes == tr.baseline_bytes + param_bytes  # the new .grad tensors
    assert tr.peak_bytes > tr.baseline_bytes + param_bytes

    # Second backward accumulates into the existing .grad (in place): nothing new stays.
    with LiveTensorMemoryTracker(baseline=(model, x)) as tr2:
        assert tr2.baseline_bytes == 2 * param_bytes + _nbytes(x)
        model(x).pow(2).sum().backward()
        assert tr2.current_bytes == tr2.baseline_bytes
        assert tr2.peak_bytes >= tr2.baseline_bytes + param_bytes  # incoming grads were live
        model.zero_grad(set_to_none=True)  # freed baseline grads are subtracted
        assert tr2.current_bytes == tr2.baseline_bytes - param_bytes


def test_baseline_includes_optimizer_state_deduplicated() -> None:
    model = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    opt = torch.optim.Adam(model.parameters())
    model(x).sum().backward()
    opt.step()
    param_bytes = _nbytes(*model.parameters())
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    expected = 2 * param_bytes + _nbytes(*state)  # params + grads + exp_avg, exp_avg_sq, step
    with LiveTensorMemoryTracker(baseline=(model, opt, model, list(model.parameters()))) as tr:
        pass
    assert tr.baseline_bytes == expected == tr.peak_bytes == tr.current_bytes


def test_measure_peak_memory_cpu() -> None:
    w = torch.zeros(256)

    def fn() -> None:
        a = torch.empty(4 * MiB, dtype=torch.uint8)
        b = torch.empty(8 * MiB, dtype=torch.uint8)
        del a
        b.add_(1)

    assert measure_peak_memory(fn, device="cpu", baseline=[w]) == 12 * MiB + 1024
    assert measure_peak_memory(fn, device=torch.device("cpu")) == 12 * MiB


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(12 * MiB) == "12.0 MiB"
    assert format_bytes(-3 * MiB // 2) == "-1.5 MiB"
    assert format_bytes(5 * (1 << 30)) == "5.0 GiB"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tracker_matches_cuda_allocator() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512)).to(device)
    x = torch.randn(256, 512, device=device)

    def step() -> None:
        model(x).square().mean().backward()

    step()  # warm-up: cuBLAS workspaces etc. are allocated once and then persist
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    cuda_peak = measure_peak_memory(step, device=device)
    model.zero_grad(set_to_none=True)

    with LiveTensorMemoryTracker(baseline=(model, x)) as tr:
        step()
        torch.cuda.synchronize(device)
    tracked = tr.peak_by_device["cuda"] - tr.baseline_by_device["cuda"]
    # Allocator rounds each block up to 512 B (matters only for scalars / tiny tensors).
    assert tr.baseline_by_device["cuda"] == _nbytes(*model.parameters(), x)
    assert abs((cuda_peak - start) - tracked) <= 16 * 512, (cuda_peak - start, tracked)
    assert tr.current_by_device["cuda"] == tr.baseline_by_device["cuda"] + _nbytes(*model.parameters())
