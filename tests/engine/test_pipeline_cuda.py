"""Module-parallel training on CUDA devices (skipped without them).

nccl with one GPU per stage (needs 2 GPUs), and both stages on one GPU with the configs' backend
``'auto'``, which chooses gloo there (nccl cannot put two ranks on one GPU; tensors are staged
through the CPU): the exported parameters match the single-process CPU run on the same
micro-batches (to GPU float tolerance: cuDNN's algorithms; the training processes turn TF32 off).
The CPU case (gloo, no GPU) is what the GPU check's CPU dry run runs instead: the same config, data
set and processes.
"""
import json
import os.path as osp

import pytest
import torch

from pipeline_helpers import load_state, reference_run, spawn, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`


@pytest.mark.parametrize('backend,gpus', [
    pytest.param('nccl', 2, marks=pytest.mark.gpu), pytest.param('auto', 1, marks=pytest.mark.gpu), ('gloo', 0),
    ('auto', 'pretend 1')])
def test_sync_pipeline_on_cuda_matches_single_process(tiny_cls_root, tmp_path, monkeypatch, backend, gpus):
    """``gpus='pretend 1'``: on a CPU, the training processes see one CUDA device that both stages
    share (:func:`pipeline_helpers.pretend_one_gpu`): the H200 run of the gloo case stopped there,
    before training, in mmengine's logger (``CUDA_VISIBLE_DEVICES[LOCAL_RANK]`` for rank 1); there
    ``'auto'`` must choose gloo (nccl would fail: it starts only on a real GPU)."""
    if gpus == 'pretend 1':
        if torch.cuda.is_available():
            pytest.skip("a real GPU is here: the ('auto', 1) case runs on it instead")
        monkeypatch.setenv('LV_TEST_PRETEND_ONE_GPU', '1')
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    elif torch.cuda.device_count() < gpus:
        pytest.skip(f'needs {gpus} CUDA devices')
    if gpus == 0 and torch.cuda.is_available():
        pytest.skip('the CPU case: the stages would take the GPU here')
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root, cuts=(5,),
                       extra=f"env_cfg = dict(dist_cfg=dict(backend='{backend}'))")
    work = str(tmp_path / 'work')
    spawn(cfg, work, 2)
    ref = reference_run(cfg, micro_batches=4, iters=4)
    state = load_state(osp.join(work, 'epoch_1.pth'))
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k].float(), v.float(), rtol=1e-2, atol=2e-3, msg=lambda m: f'{k}: {m}')
    for r in range(2):
        s = json.load(open(osp.join(work, 'pipeline_logs', f'summary_rank{r}.json')))
        assert s['iters'] == 4
