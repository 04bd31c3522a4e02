"""Layer discovery on a small CNN, a timm ResNet, a timm ViT and a user module by import path."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from torch import nn

from nasforge.compress.discovery import block_of, discover_layers, state_dict_split
from nasforge.compress.sources import build_model, import_factory
from nasforge.core.errors import JobSpecError, NasforgeError, NasforgeWarning
from tests.compress.helpers import TinyDigitsCNN

torch.set_num_threads(1)


def test_small_cnn_layers_in_execution_order_with_macs() -> None:
    layers, unknown = discover_layers(TinyDigitsCNN(), torch.randn(1, 1, 8, 8))
    assert [la.name for la in layers] == ["conv1", "conv2", "fc"]
    assert unknown == []
    assert layers[0].shape == [8, 1, 3, 3] and layers[0].macs == 8 * 9 * 64
    assert layers[1].macs == 16 * 8 * 9 * 16
    assert layers[2].macs == 10 * 256 and layers[2].kind == "linear"
    nbytes, nparams = state_dict_split(TinyDigitsCNN(), layers)
    sd = TinyDigitsCNN().state_dict()
    assert nbytes == sum(t.numel() * t.element_size() for k, t in sd.items() if not k.endswith(("conv1.weight", "conv2.weight", "fc.weight")))
    assert nparams == 8 + 8 + 8 + 16 + 10  # biases and BN affine


def test_skip_rules() -> None:
    x = torch.randn(1, 1, 8, 8)
    names = [la.name for la in discover_layers(TinyDigitsCNN(), x, skip_first=True, skip_last=True)[0]]
    assert names == ["conv2"]
    assert [la.name for la in discover_layers(TinyDigitsCNN(), x, skip=["fc"])[0]] == ["conv1", "conv2"]


def test_timm_resnet18() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    layers, unknown = discover_layers(model, torch.randn(1, 3, 32, 32), group_by="block")
    assert len(layers) == 21  # 20 convs (incl. 3 downsample) + fc
    assert layers[0].name == "conv1" and layers[-1].name == "fc"
    assert sum(la.shape[0] * la.shape[1] * (la.shape[2] * la.shape[3] if len(la.shape) == 4 else 1)
               for la in layers) == sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    groups = {la.group for la in layers}
    assert "layer1.0" in groups and "layer4.1" in groups and len(groups) == 1 + 8 + 1


def test_timm_vit_grouped_by_transformer_block() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              num_classes=10, depth=2)
    layers, unknown = discover_layers(model, torch.randn(1, 3, 32, 32), group_by="block")
    names = [la.name for la in layers]
    assert names[0] == "patch_embed.proj" and names[-1] == "head"
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.1.mlp.fc2"} <= set(names)
    qkv = next(la for la in layers if la.name == "blocks.0.attn.qkv")
    assert qkv.macs == 17 * 192 * 576  # 16 patches + cls token
    assert [la.group for la in layers if la.name.startswith("blocks.1.")] == ["blocks.1"] * 4
    assert block_of("blocks.3.attn.qkv") == "blocks.3" and block_of("head") == "head"


class WithEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.up = nn.ConvTranspose1d(8, 8, 2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.up(self.emb(x).transpose(1, 2)).mean(-1))


def test_unknown_layer_types_skipped_with_a_warning_naming_them() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers, unknown = discover_layers(WithEmbedding(), torch.zeros(1, 5, dtype=torch.long))
    assert [la.name for la in layers] == ["fc"]
    assert unknown == ["emb (Embedding)", "up (ConvTranspose1d)"]
    assert any("emb (Embedding)" in str(w.message) and "up (ConvTranspose1d)" in str(w.message)
               and w.category is NasforgeWarning for w in caught)  # Ray workers ignore this category


def test_user_module_by_import_path(tmp_path) -> None:
    factory = import_factory("tests.compress.helpers:tiny_digits_cnn")
    model = build_model("tests.compress.helpers:tiny_digits_cnn", None, {"width": 4})
    assert factory is not None and model.conv1.out_channels == 4
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = build_model("tests.compress.helpers:tiny_digits_cnn", str(tmp_path / "w.pt"), {"width": 4, "seed": 9})
    assert torch.equal(again.fc.weight, model.fc.weight)
    layers, _ = discover_layers(again, torch.randn(1, 1, 8, 8))
    assert [la.name for la in layers] == ["conv1", "conv2", "fc"]
    with pytest.raises(JobSpecError, match="model.source"):
        build_model("no_such_pkg.mod:f", None, {})
    with pytest.raises(JobSpecError, match="model.weights"):
        build_model("timm:resnet18", None, {})


def test_factory_options_and_errors_are_one_line_naming_the_key(tmp_path, monkeypatch) -> None:
    """Options the factory does not take name model.options and its parameters; an error the user's
    factory raises names its type and the line of the user's file (torch's frames are left out);
    a timm name that does not exist is named before the weights are asked for."""
    with pytest.raises(JobSpecError, match=r"model.options: tests.compress.helpers:tiny_digits_cnn cannot be called "
                                           r"with them \(.*'widht'\); it takes: width, seed"):
        build_model("tests.compress.helpers:tiny_digits_cnn", None, {"widht": 4})
    (tmp_path / "needsarg.py").write_text("def make(width):\n    raise AssertionError('not called')\n")
    (tmp_path / "brokennet.py").write_text(
        "import torch\n\ndef make(width=4):\n    layer = torch.nn.Linear(width, 2)\n"
        "    return layer(torch.zeros(3))  # 3 features into a 4-feature layer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(JobSpecError, match=r"model.options: needsarg:make cannot be called with them \(missing a "
                                           r"required argument: 'width'\); it takes: width"):
        build_model("needsarg:make", None, {})
    with pytest.raises(NasforgeError) as info:
        build_model("brokennet:make", None, {})
    msg = str(info.value)
    assert msg.startswith("model.source: brokennet:make(**model.options) raised RuntimeError at brokennet.py:5: ")
    assert "\n" not in msg
    with pytest.raises(JobSpecError, match=r"model.source: timm has no model 'resnet1' \(did you mean 'resnet18'"):
        build_model("timm:resnet1", None, {})
    with pytest.raises(JobSpecError, match="names a hub or folder checkpoint, which nasforge does not fetch"):
        build_model("timm:hf-hub:timm/resnet18.a1_in1k", None, {})


def test_weights_that_do_not_fit_are_named_in_a_few_words(tmp_path) -> None:
    """torch's load_state_dict message lists every key (kilobytes on one line for another architecture)."""
    from safetensors.torch import save_file

    from nasforge.compress.sources import ModelSourceError

    mobile = tmp_path / "mobile.safetensors"
    save_file(timm.create_model("mobilenetv3_small_050", num_classes=10, in_chans=1).state_dict(), str(mobile))
    with pytest.raises(ModelSourceError) as e:
        build_model("timm:resnet10t", str(mobile), {"num_classes": 10, "in_chans": 1})
    msg = str(e.value)
    assert msg.startswith(f"model.weights: {mobile} does not fit timm:resnet10t: 81 of the model's 86 tensors are "
                          "not in the file (conv1.0.weight, conv1.1.weight, conv1.1.bias, ... (78 more)); ")
    assert len(msg) < 1000 and "\n" not in msg
    assert msg.endswith("check model.source and model.options (e.g. num_classes, in_chans) against the model the "
                        "weights were saved from")
    r10 = tmp_path / "r10.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=10, in_chans=1).state_dict(), str(r10))
    with pytest.raises(ModelSourceError, match=r"does not fit timm:resnet10t: shapes differ: fc.weight is \(10, 512\) "
                                               r"in the file, \(12, 512\) in the model, fc.bias is \(10,\) in the "
                                               r"file, \(12,\) in the model; check"):
        build_model("timm:resnet10t", str(r10), {"num_classes": 12, "in_chans": 1})


def test_weights_files_that_are_not_state_dicts_say_how_to_save_them(tmp_path) -> None:
    from nasforge.compress.sources import ModelSourceError, load_state_dict_file

    model = TinyDigitsCNN(4)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")  # a training checkpoint
    assert set(load_state_dict_file(tmp_path / "ckpt.pt")) == set(model.state_dict())
    torch.save(model, tmp_path / "whole.pt")  # the whole model pickled: torch's message ran to a screenful
    with pytest.raises(ModelSourceError) as e:
        load_state_dict_file(tmp_path / "whole.pt")
    assert "holds pickled Python objects" in str(e.value) and "torch.save(model.state_dict(), PATH)" in str(e.value)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ModelSourceError, match=r"cannot read .* as a torch state dict \(not a file torch.save wrote"):
        load_state_dict_file(tmp_path / "text.pt")
