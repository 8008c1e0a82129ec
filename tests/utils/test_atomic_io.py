import os

import pytest
from mmengine.fileio import get_file_backend

from localvision.utils.atomic_io import AtomicLocalBackend, use_atomic_local_writes


def test_mmengine_local_writes_become_atomic(tmp_path):
    use_atomic_local_writes()
    backend = get_file_backend(str(tmp_path / 'x.pth'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'old', tmp_path / 'x.pth')
    backend.put_text('latest', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'last_checkpoint').read_text() == 'latest'


def test_a_write_that_dies_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    AtomicLocalBackend().put(b'complete checkpoint', target)

    def killed(fd):
        raise KeyboardInterrupt  # e.g. Ctrl-C or a kill while the bytes are being written

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        AtomicLocalBackend().put(b'half', target)
    assert target.read_bytes() == b'complete checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth']
