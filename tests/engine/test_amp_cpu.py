"""Mixed precision on the CPU (bfloat16 autocast, float16 with loss scaling) through the
``OptimWrapper`` path the executors use: ``MixedPrecisionOptimWrapper``."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from localvision.engine import MixedPrecisionOptimWrapper

from local_models import build, local_model_classes, task_model_params, tiny
from test_executors import make_batch, make_model

NAMES = sorted(local_model_classes())  # every task model in the registries


def amp_wrapper(model, **kwargs) -> MixedPrecisionOptimWrapper:
    return MixedPrecisionOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def grads(model, ow, batch) -> dict:
    model.train_step(copy.deepcopy(batch), ow)
    return {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_defaults_on_cpu_are_bfloat16_without_loss_scaling():
    ow = amp_wrapper(make_model(k=2))
    assert ow.device_type == 'cpu' and ow.cast_dtype == torch.bfloat16 and ow.loss_scaler is None
    with pytest.raises(Exception, match='dtype'):
        amp_wrapper(make_model(k=2), dtype='int8')


def test_bf16_per_module_backward_matches_joint_and_runs_in_bf16():
    """The CPU counterpart of test_executors' CUDA AMP test: per-module and joint backward give
    the same gradients under autocast; module 0 computes in bfloat16; one counted step."""
    batch = make_batch()
    out = []
    for executor in ('PerModuleBackward', 'JointBackward'):
        model = make_model(k=3, executor=executor)
        seen = []
        hook = model.backbone.model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        ow = amp_wrapper(model, accumulative_counts=2)
        out.append(grads(model, ow, batch))
        hook.remove()
        assert seen == [torch.bfloat16] and ow.inner_count == 1
    assert out[0].keys() == out[1].keys()
    for n in out[0]:
        torch.testing.assert_close(out[0][n], out[1][n], rtol=1e-2, atol=1e-4)


def test_bf16_step_trains_every_module_and_stays_close_to_fp32():
    from mmengine.optim import OptimWrapper
    batch = make_batch()
    fp32_model, bf16_model = make_model(k=3), make_model(k=3)
    fp32 = grads(fp32_model, OptimWrapper(torch.optim.SGD(fp32_model.parameters(), lr=0.1), accumulative_counts=2),
                 batch)
    bf16 = grads(bf16_model, amp_wrapper(bf16_model, accumulative_counts=2), batch)
    # bfloat16 keeps 8 bits of mantissa: the gradients point the same way as fp32's
    assert bf16.keys() == fp32.keys()
    flat = lambda g: torch.cat([v.flatten() for v in g.values()])  # noqa: E731
    cos = torch.nn.functional.cosine_similarity(flat(bf16), flat(fp32), dim=0)
    assert cos > 0.99, float(cos)
    model = make_model(k=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train_step(copy.deepcopy(batch), amp_wrapper(model))  # steps in the iteration
    for k in range(model.num_units):
        names = {id(p) for p in model.unit_parameters(k)}
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if id(p) in names), k


def test_fp16_with_loss_scaling_on_cpu_and_its_state():
    batch = make_batch()
    ref = grads(make_model(k=2), amp_wrapper(make_model(k=2), dtype='float16', accumulative_counts=2), batch)
    model = make_model(k=2)
    ow = amp_wrapper(model, dtype='float16', loss_scale=1024.0, accumulative_counts=2)
    assert ow.loss_scaler is not None
    scaled = grads(model, ow, batch)
    for n in ref:  # the fixed scale multiplies the gradients (the dynamic one starts at 2**16); fp16 rounds
        a, b = scaled[n].double() / 1024.0, ref[n].double() / 65536.0  # differently at the two scales, so compare
        assert float((a - b).norm()) <= 1e-2 * float(b.norm()) + 1e-8, n  # whole tensors (a wrong scale is 64x off)
    ow.update_params(torch.zeros((), requires_grad=True) * 0)  # completes the accumulation: a step
    state = ow.state_dict()
    assert state['loss_scaler']['scale'] == 1024.0
    other = amp_wrapper(make_model(k=2), dtype='float16')
    other.load_state_dict(copy.deepcopy(state))
    assert other.loss_scaler.get_scale() == 1024.0


def test_checkpointing_under_bf16_gives_the_same_gradients():
    batch = make_batch()
    plain, ckpt = make_model(k=2), make_model(k=2)
    ckpt.backbone.set_grad_checkpointing(True)
    g1, g2 = grads(plain, amp_wrapper(plain, accumulative_counts=2), batch), \
        grads(ckpt, amp_wrapper(ckpt, accumulative_counts=2), batch)
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=0, atol=0)


@pytest.mark.parametrize('name', task_model_params())
def test_bf16_step_trains_every_task_model(name):
    """``--amp`` on the CPU for every task model (with ContSup context): the first convolution
    computes in bfloat16, the losses are finite and every module's parameters change. Mask R-CNN
    stopped here in mmcv's NMS (no bfloat16 kernel) before :func:`mmcv_ops_in_float32`."""
    model = build(name, 3, context=dict(type='ContSup', variant='R1E'))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = model.train_step(copy.deepcopy(tiny(name).batch(2)), amp_wrapper(model))
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(v).all() for v in losses.values())
    names = {id(p): n for n, p in model.named_parameters()}
    for k in range(model.num_units):
        assert any(not torch.equal(p, before[names[id(p)]]) for p in model.unit_parameters(k)), f'module {k}'


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_mmcv_ops_compute_in_float32_where_they_lack_the_type(dtype):
    """mmcv's CPU RoIAlign and NMS under mixed precision: the result of float32 on the rounded inputs,
    in the input type, and gradients of that type (mmcv has no CPU kernel for either type)."""
    mmcv_ops = pytest.importorskip('mmcv.ops')
    from localvision.engine.optim import mmcv_ops_in_float32
    mmcv_ops_in_float32()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 4, 16, 16, generator=g).to(dtype)
    rois = torch.tensor([[0, 1., 1., 9., 9.], [0, 4., 2., 14., 12.]]).to(dtype)
    grads = []
    for low in (True, False):
        x = (feats if low else feats.float()).clone().requires_grad_()
        out = mmcv_ops.roi_align(x, rois if low else rois.float(), (3, 3), 1.0, 2, 'avg', True)
        assert out.dtype == x.dtype
        (out.float() * torch.arange(out.numel()).view_as(out)).sum().backward()
        assert x.grad.dtype == x.dtype
        grads.append((out, x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0].to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1].to(dtype), rtol=0, atol=0)
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]]).to(dtype)
    scores = torch.tensor([0.9, 0.8, 0.7]).to(dtype)
    dets, keep = mmcv_ops.nms(boxes, scores, 0.5)
    assert keep.tolist() == [0, 2] and dets.dtype == dtype


@pytest.mark.parametrize('scope', sorted({'localvision'} | {tiny(n).scope for n in NAMES}))
def test_built_from_config_in_every_scope(scope):
    """The scopes of every task model's configs (and localvision's) find the wrapper."""
    from mmengine.registry import DefaultScope
    model = make_model(k=2)
    with DefaultScope.overwrite_default_scope(scope):
        ow = build_optim_wrapper(model, dict(type='MixedPrecisionOptimWrapper',
                                             optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(ow, MixedPrecisionOptimWrapper)


@pytest.mark.slow  # trains through tools/train.py
@pytest.mark.skipif(torch.cuda.is_available(), reason='--amp takes mmengine AmpOptimWrapper (fp16) on CUDA')
def test_train_py_amp_on_cpu_trains_in_bf16_and_resumes_the_wrapper(tiny_cls_root, tmp_path):
    import os.path as osp
    import sys
    from mmengine.runner import Runner
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.path[:0] = [osp.join(root, 'tools'), osp.join(root, 'tests', 'tools')]
    import train as train_tool  # tools/train.py
    from test_train_resume import CONFIG, tiny_options
    args = train_tool.parse_args([CONFIG, '--amp', '--work-dir', str(tmp_path)] + tiny_options(tiny_cls_root, 1))
    cfg = train_tool.build_cfg(args)
    assert cfg.optim_wrapper.type == 'MixedPrecisionOptimWrapper'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert isinstance(runner.optim_wrapper, MixedPrecisionOptimWrapper)
    assert runner.optim_wrapper.cast_dtype == torch.bfloat16 and runner.iter == 4
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))
