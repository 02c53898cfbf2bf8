import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op torch thread per test module.

    The models under test are small: with two threads on a two-core machine that also runs the
    subprocesses of other tests, torch's threads spin against each other and run many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
