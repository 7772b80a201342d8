import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The suite's models are tiny: one intra-op thread is faster than several and deterministic across machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits with the seeded stratified test split."""
    from datadistill.data import load

    return load("digits")
