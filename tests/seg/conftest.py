import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on 2 shared cores, oversubscribed torch
    threads make the SAM tests about 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
