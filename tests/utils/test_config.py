"""Loading a config as the tools do: a task library the environment lacks is one error line."""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HIDE = '''
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {name!r}:
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
sys.meta_path.insert(0, Hide())
sys.argv = ['tools/train.py', {config!r}, '--work-dir', {work_dir!r}]
sys.path.insert(0, 'tools')
import runpy
runpy.run_path('tools/train.py', run_name='__main__')
'''


@pytest.mark.slow  # starts a process
@pytest.mark.parametrize('hidden,config,hint', [
    ('mmpretrain', 'configs/cls/cifar_resnet32_shapes_greedy_k4.py', "pip install -e '.[cls]'"),
    ('mmseg', 'configs/seg/deeplab_infopro_k4_demo.py', "pip install -e '.[seg]'"),
])
def test_a_missing_task_library_is_one_error_line(hidden, config, hint, tmp_path):
    code = HIDE.format(name=hidden, config=config, work_dir=str(tmp_path))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and 'Warning' not in ln
             and not ln.startswith('  ')]
    assert lines[-1].startswith(f'error: {config} needs {hidden}'), proc.stderr[-2000:]
    assert hint in lines[-1] and 'Traceback' not in proc.stderr


def _one_config_per_task():
    """The first demo config of every task folder (classification: the learning-quality config)."""
    import glob
    first = {}
    for path in sorted(glob.glob(osp.join(ROOT, 'configs/*/*_demo.py'))):
        first.setdefault(osp.basename(osp.dirname(path)), osp.relpath(path, ROOT))
    first.setdefault('cls', 'configs/cls/cifar_resnet32_forms_greedy_k4.py')
    return sorted(first.values())


DEMO_CONFIGS = _one_config_per_task()


@pytest.mark.parametrize('config', DEMO_CONFIGS)
def test_param_schedulers_are_checked_before_training(config):
    """The shipped schedulers pass; a bad one is one InputError naming it, before anything is built."""
    from localvision.errors import InputError
    from localvision.utils.config import check_param_schedulers, load_config
    cfg = load_config(osp.join(ROOT, config))
    check_param_schedulers(cfg)
    last = len(cfg.param_scheduler) - 1
    for options, expected in [({f'param_scheduler.{last}.begin': 5, f'param_scheduler.{last}.end': 2},
                               'end should be larger than begin'),
                              ({f'param_scheduler.{last}.type': 'NoSuchLR'}, 'NoSuchLR is not in'),
                              ({f'param_scheduler.{last}.no_such_key': 1}, "unexpected keyword argument 'no_such_key'")]:
        bad = cfg.copy()
        bad.merge_from_dict(options)
        with pytest.raises(InputError, match=rf'param_scheduler\[{last}\] .*{expected}'):
            check_param_schedulers(bad)
