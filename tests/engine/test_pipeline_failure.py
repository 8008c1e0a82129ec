"""A module that raises or dies stops every rank within seconds, with a message naming it.

The processes are started one by one (no torchrun, which would kill the others itself), so what
stops them is the pipeline's own watchdog / transport error handling.
"""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest

from pipeline_helpers import ROOT, free_port, write_config

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

HERE = osp.dirname(osp.abspath(__file__))


def _launch(config, work, world):
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS='1',
                   PYTHONPATH=f"{HERE}:{ROOT}:{os.environ.get('PYTHONPATH', '')}")
        procs.append(subprocess.Popen([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--launcher',
                                       'pytorch', '--work-dir', work], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=ROOT))
    outs, codes, ends = [], [], []
    deadline = time.time() + 180
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
        codes.append(p.returncode)
        ends.append(time.time())
    return outs, codes, max(ends)


@pytest.mark.parametrize('die', [False, True], ids=['raises', 'dies'])
def test_a_failing_module_stops_every_rank_within_seconds(tiny_cls_root, tmp_path, die):
    stamp = tmp_path / 'failed_at'
    cfg = write_config(
        tmp_path / 'cfg.py', tiny_cls_root, cuts=(2, 5), epochs=1,
        model_extra=", local_objective=[dict(type='Greedy', head=dict(type='PoolLinearHead')), "
                    f"dict(type='Greedy', head=dict(type='TestFailingHead', fail_at=6, stamp='{stamp}', "
                    f"die={die}))]",
        extra="custom_imports = dict(imports=['localvision.utils.setup_env', 'localvision.cls', 'pipeline_helpers'], "
              "allow_failed_imports=False)")
    outs, codes, end = _launch(cfg, str(tmp_path / 'work'), 3)
    assert stamp.exists(), outs
    elapsed = end - float(stamp.read_text())
    assert all(c != 0 for c in codes), (codes, outs)
    print(f'all ranks stopped {elapsed:.1f} s after the failure')
    assert elapsed < 12, (elapsed, outs)
    for rank, out in enumerate(outs):
        if rank == 1:
            continue
        assert 'stage 1 (module 1: blocks' in out, out[-3000:]
        if die:
            assert 'is gone' in out, out[-3000:]
        else:
            assert 'broke on purpose' in out and 'stopping:' in out, out[-3000:]
    if not die:
        own = outs[1]
        assert 'stage 1 (module 1: blocks' in own and 'failed at iteration 2, micro-batch 1' in own, own[-3000:]
