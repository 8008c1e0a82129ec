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
