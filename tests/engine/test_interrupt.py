"""StopOnSignal.data_loader_stopped: which errors mean "the stop signal also ended the loader's workers"."""
import pytest
from torch.utils.data import DataLoader, Dataset

from localvision.engine.interrupt import StopOnSignal


class _Ends(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        raise EOFError('connection to the worker ended')


def _raised(fn) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn()
    return info.value


def test_only_a_requested_stop_and_a_loader_error_count():
    stop = StopOnSignal()
    from_loader = _raised(lambda: next(iter(DataLoader(_Ends(), num_workers=0))))
    elsewhere = _raised(lambda: (_ for _ in ()).throw(EOFError('elsewhere')))
    worker = RuntimeError('DataLoader worker (pid 123) exited unexpectedly')
    assert not stop.data_loader_stopped(from_loader) and not stop.data_loader_stopped(worker)  # no stop requested
    stop.requested = 'SIGTERM'
    assert stop.data_loader_stopped(from_loader)  # EOFError inside the data loader's fetch
    assert stop.data_loader_stopped(worker)
    assert not stop.data_loader_stopped(elsewhere)  # an EOFError outside the data loader is a real error
    assert not stop.data_loader_stopped(RuntimeError('shape mismatch'))
    assert not stop.data_loader_stopped(ValueError('DataLoader worker'))
