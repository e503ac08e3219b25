import gzip
import struct
import sys
import types

import numpy as np
import pytest
import torch

from pyrovae import data


def write_idx(path, array, compress=False):
    """An IDX file laid out by hand from the format's definition (LeCun et al.)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) * 7 % 200).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a, compress)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), a)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says shape"):
        data.read_idx(tmp_path / "short")


def test_mnist_from_idx_folder_equals_npz(tmp_path, mnist_path):
    with np.load(mnist_path) as f:
        arrays = {k: f[k][:500] if k.endswith("train") else f[k][:200] for k in f.files}
    np.savez(tmp_path / "small.npz", **arrays)
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    (tmp_path / "raw").mkdir()
    for k, name in names.items():  # torchvision's layout: gzipped files under raw/
        write_idx(tmp_path / "raw" / (name + ".gz"), arrays[k], compress=True)
    from_idx = data.load_mnist(tmp_path, valid_size=100)
    from_npz = data.load(f"mnist:{tmp_path / 'small.npz'}", valid_size=100)
    for a, b in zip(from_idx, from_npz):
        torch.testing.assert_close(a.x, b.x)
        torch.testing.assert_close(a.y, b.y)
    assert from_idx.test.x.shape == (200, 1, 28, 28)
    assert from_idx.train.x.max() == 1.0 and from_idx.train.x.min() == 0.0
    torch.testing.assert_close(from_idx.test.x[7, 0] * 255, torch.from_numpy(
        arrays["x_test"][7]).float())


def test_mnist_folder_missing_files_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
        data.load_mnist(tmp_path)


def test_real_mnist_splits(mnist_path):
    s = data.load(f"mnist:{mnist_path}", binarize="dynamic")
    assert (len(s.train), len(s.valid), len(s.test)) == (50000, 10000, 10000)
    assert s.test.x.unique().tolist() == [0.0, 1.0]  # evaluation data binarised once
    assert s.train.x.unique().numel() > 2  # training keeps intensities to resample


def test_digits_embedded_matches_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    s = data.load("digits")
    assert len(s.train) + len(s.valid) + len(s.test) == 1797
    x = torch.cat([s.train.x, s.valid.x, s.test.x]).reshape(1797, 64)
    y = torch.cat([s.train.y, s.valid.y, s.test.y])
    # the same multiset of (image, label) pairs as scikit-learn ships
    ours = sorted(map(tuple, torch.cat([x * 16, y[:, None].float()], 1).round().int().tolist()))
    theirs = sorted(map(tuple, np.concatenate([ref.data, ref.target[:, None]], 1).astype(int)
                        .tolist()))
    assert ours == theirs


def test_splits_are_deterministic_disjoint_and_cover():
    a, b = data.split_indices(100, (10, 20, 70), seed=3), data.split_indices(100, (10, 20, 70), 3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert sorted(torch.cat(a).tolist()) == list(range(100))
    c = data.split_indices(100, (10, 20, 70), seed=4)
    assert not torch.equal(a[0], c[0])


def test_dynamic_binarisation_resamples_with_the_right_mean():
    p = torch.linspace(0, 1, 11).repeat(20, 1)  # 20 data points, 11 probabilities
    ds = data.Dataset(p, binarize="dynamic")
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([ds.batch(torch.arange(20), g)["x"] for _ in range(400)])
    assert draws.unique().tolist() == [0.0, 1.0]
    mean = draws.mean((0, 1))
    se = (p[0] * (1 - p[0]) / 8000).sqrt()
    assert ((mean - p[0]).abs() <= 4 * se + 1e-6).all()
    assert not torch.equal(draws[0], draws[1])  # a new draw each time


def test_fixed_binarisation_is_one_draw_fixed_by_seed():
    p = torch.rand(50, 8)
    a = data.Dataset(p, binarize="fixed", seed=5)
    b = data.Dataset(p, binarize="fixed", seed=5)
    assert torch.equal(a.x, b.x)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a.batch(torch.arange(5), g)["x"], a.x[:5])
    assert torch.equal(data.Dataset(p, binarize="threshold").x, (p > 0.5).float())


def test_as_dataset_accepts_common_containers():
    x, y = np.random.default_rng(0).random((6, 3)), np.arange(6)
    for obj in (x, torch.tensor(x), (x, y), torch.utils.data.TensorDataset(torch.tensor(x),
                                                                           torch.tensor(y))):
        ds = data.as_dataset(obj)
        torch.testing.assert_close(ds.x, torch.tensor(x, dtype=torch.float32))

    class ListDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.tensor(x[i]), int(y[i])

    ds = data.as_dataset(ListDataset())
    assert ds.y.tolist() == list(range(6))


@pytest.mark.parametrize("x, y, kw, message", [
    (np.full((3, 2), np.nan), None, {}, "expected finite values, found 6 NaN/Inf"),
    (np.zeros((0, 2)), None, {}, "the dataset is empty"),
    (np.zeros((3, 2)), np.zeros(4), {}, r"y: expected shape \(3,\)"),
    (np.full((3, 2), 2.0), None, {"binarize": "dynamic"}, r"needs values in \[0, 1\]"),
    (np.float32(3.0), None, {}, "got a scalar"),
    (np.array([["a", "b"]]), None, {}, "expected a numeric array"),
    (np.zeros((3, 2)), None, {"binarize": "sometimes"}, "binarize: expected one of"),
])
def test_dataset_errors_name_the_problem(x, y, kw, message):
    with pytest.raises(ValueError, match=message):
        data.Dataset(x, y, **kw)


def test_load_spec_errors():
    with pytest.raises(ValueError, match="unknown spec 'cifar'"):
        data.load("cifar")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load("missing.npz")


def test_npz_and_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((40, 5, 5)) * 255).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(40))
    s = data.load(str(tmp_path / "a.npz"))
    assert s.train.x.shape[1:] == (1, 5, 5) and s.train.x.max() <= 1.0
    assert len(s.train) + len(s.valid) + len(s.test) == 40
    np.save(tmp_path / "b.npy", rng.random((30, 4)))
    assert data.load(str(tmp_path / "b.npy")).train.event_shape == (4,)
    np.savez(tmp_path / "c.npz", images=x)
    with pytest.raises(ValueError, match=r"has keys \['images'\]"):
        data.load(str(tmp_path / "c.npz"))


def test_torchvision_adapter_reads_data_and_targets(monkeypatch, tmp_path):
    # torchvision is optional and not installed here; a stand-in module with the same
    # attributes (.data uint8 (N, H, W) tensor, .targets) checks the adapter's conversion.
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            n = 30 if train else 10
            self.data = torch.arange(n * 4 * 4, dtype=torch.int64).remainder(256).to(
                torch.uint8).reshape(n, 4, 4)
            self.targets = torch.arange(n) % 10

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=FakeMNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    s = data.load(f"torchvision:MNIST:{tmp_path}", valid_size=5)
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    assert s.test.x.shape == (10, 1, 4, 4)
    torch.testing.assert_close(s.test.x[0, 0] * 255, torch.arange(16.0).reshape(4, 4))
    assert s.test.y.tolist() == list(range(10))
