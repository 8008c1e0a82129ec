"""Synchronous module-parallel training on gloo CPU processes equals the single-process run.

K stages on K processes, each global batch in M micro-batches: after every iteration the
parameters (and BatchNorm statistics: they are per micro-batch in both) of every unit equal those
of ``PerModuleBackward`` in one process with gradients accumulated over the same micro-batches.
The merged export is the ordinary single-file checkpoint.
"""
import os.path as osp

import pytest
import torch

from pipeline_helpers import load_state, reference_run, spawn, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`


def _compare(exported, ref_model, atol=1e-5):
    state = load_state(exported)
    ref = ref_model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=atol, msg=lambda m: f'{k}: {m}')


@pytest.mark.parametrize('k,cuts,model_extra', [
    (2, (5,), ''),
    # InfoPro (its decoder needs the image) + ContSup R1E (the image and earlier modules' inputs
    # travel with the activation) on 3 stages
    (3, (3, 6), ", local_objective=dict(_delete_=True, type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), "
                "lambda_task=(1, 1)), context=dict(type='ContSup', variant='R1E')"),
])
def test_sync_pipeline_equals_single_process_micro_batched(tiny_cls_root, tmp_path, k, cuts, model_extra):
    # PeakMemoryHook: every stage measures its own peak at that iteration (and trains the same)
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=cuts, model_extra=model_extra,
                       extra="custom_hooks = [dict(type='localvision.PeakMemoryHook', at_iter=2)]")
    work = str(tmp_path / 'work')
    spawn(cfg, work, k)
    exported = osp.join(work, 'epoch_1.pth')  # 64 images / batch 16 = 4 iterations
    ref = reference_run(cfg, micro_batches=4, iters=4)
    _compare(exported, ref)
    import json
    for rank in range(k):
        summary = json.load(open(osp.join(work, 'pipeline_logs', f'summary_rank{rank}.json')))
        assert summary['iters'] == 4 and summary['micro_batches'] == 4
        assert summary['memory']['iteration'] == 2 and summary['memory']['device'] == 'cpu'
        # more than the stage's own weights (activations, gradients, momentum come on top)
        assert summary['memory']['peak_bytes'] > summary['owned_param_bytes'] > 0


def test_sync_pipeline_on_a_graph_read_backbone(tiny_cls_root, tmp_path):
    """Twins (read from its fx graph: blocks get the grid size, the state crosses the cut as a map)
    on 2 processes equals the single-process run."""
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,),
                       extra="model['backbone'] = dict(type='StagedTimm', model_name='twins_svt_small', img_size=32)")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    _compare(osp.join(work, 'epoch_1.pth'), reference_run(cfg, micro_batches=4, iters=4))


def test_sync_pipeline_channels_last(tiny_cls_root, tmp_path):
    """``backbone.channels_last`` on 3 stages (InfoPro + ContSup R1E: channels-last maps cross the
    cuts, contiguous after the transport) trains like the single-process channels-last run (one
    step equals the contiguous model's: tests/models/test_local_models.py)."""
    extra = (", local_objective=dict(_delete_=True, type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), "
             "lambda_task=(1, 1)), context=dict(type='ContSup', variant='R1E')")
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(3, 6), model_extra=extra)
    work = str(tmp_path / 'work')
    options = {'model.backbone.channels_last': True}
    spawn(cfg, work, 3, options=options)
    _compare(osp.join(work, 'epoch_1.pth'), reference_run(cfg, micro_batches=4, iters=4, options=options))


def test_auto_scale_lr_scales_like_the_runner(tiny_cls_root, tmp_path):
    """``auto_scale_lr`` (base batch size 8, global batch 16): the run equals the single-process
    reference with the learning rate doubled, as mmengine's Runner scales it."""
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,),
                       extra='auto_scale_lr = dict(enable=True, base_batch_size=8)')
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    _compare(osp.join(work, 'epoch_1.pth'),
             reference_run(cfg, micro_batches=4, iters=4, options={'optim_wrapper.optimizer.lr': 0.1}))
    with pytest.raises(AssertionError):  # and not the config's learning rate
        _compare(osp.join(work, 'epoch_1.pth'), reference_run(cfg, micro_batches=4, iters=4))


def test_sync_pipeline_under_mixed_precision(tiny_cls_root, tmp_path):
    """``--amp`` on the CPU (``MixedPrecisionOptimWrapper``, bfloat16 autocast in every stage): the
    stages train as the single-process run with the same wrapper."""
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,),
                       extra="optim_wrapper = dict(type='MixedPrecisionOptimWrapper', optimizer=dict(lr=0.05))")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    ref = reference_run(cfg, micro_batches=4, iters=4)
    _compare(osp.join(work, 'epoch_1.pth'), ref)
