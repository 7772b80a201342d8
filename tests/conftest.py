import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The suite's models are tiny: one intra-op thread is faster than several and deterministic across machines.
    Per module, so a test whose command line sets ``--threads`` cannot leave the next module on more threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits with the seeded stratified test split."""
    from datadistill.data import load

    return load("digits")


@pytest.fixture(scope="module")
def blobs3d():
    """Three well-separated 3-D Gaussian blobs (400 training, 200 test rows): no 2-D scatter to draw, so run
    directories render quickly."""
    from sklearn.datasets import make_blobs

    from datadistill.data import Dataset

    X, y = make_blobs(n_samples=600, n_features=3, centers=3, cluster_std=1.0, random_state=4)
    X = X.astype(np.float32)
    return Dataset.create(X[:400], y[:400], test=(X[400:], y[400:]), name="blobs3d")


@pytest.fixture
def csv_file(tmp_path):
    """A 120-row, 3-feature, 2-class CSV with a header and a ``label`` column."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    path = tmp_path / "data.csv"
    path.write_text("a,b,c,label\n" + "".join(",".join(f"{v:.6f}" for v in r) + f",{t}\n" for r, t in zip(X, y)))
    return path
