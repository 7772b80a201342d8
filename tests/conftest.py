import numpy as np
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


@pytest.fixture
def csv_file(tmp_path):
    """A 120-row, 3-feature, 2-class CSV with a header and a ``label`` column."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    path = tmp_path / "data.csv"
    path.write_text("a,b,c,label\n" + "".join(",".join(f"{v:.6f}" for v in r) + f",{t}\n" for r, t in zip(X, y)))
    return path
