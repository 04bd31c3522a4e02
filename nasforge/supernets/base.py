"""Supernet: one set of shared weights serving every child of a SearchSpace.

Contract (tests/supernets/test_supernet_contract.py runs it for every registered supernet):
- ``forward(x, arch)`` takes the arch as an argument; no hidden "active subnet" state is kept
  between calls, so concurrent calls with different archs are safe.
- ``extract(arch)`` returns a plain ``nn.Module`` (ordinary torch layers, weights copied) whose
  outputs equal ``forward(x, arch)`` in eval mode (float32, atol 1e-5), and that exports to ONNX
  and with ``torch.export``.
- ``build_child(space, arch)`` (a classmethod) builds the same plain module with fresh weights,
  from the space and arch alone: exports load without the supernet.
- ``input_shape(arch)`` is the shape of one input the child expects, without the batch dim:
  (C, H, W) for image models (resolution may be elastic), (L,) for token models.
- ``input_kind`` says what ``forward`` takes: ``"image"`` (float32 N x C x H x W) or ``"tokens"``
  (int64 N x L token ids); ``example_input(arch, n)`` returns a valid batch of that kind (used by
  the contract suite, FLOPs counting and exports).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace


class SupernetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Supernet(nn.Module, ABC):
    Options: ClassVar[type[SupernetOptions]] = SupernetOptions
    #: space ids this supernet family can serve
    spaces: ClassVar[tuple[str, ...]] = ()
    #: the ``training.trainer`` names that train this family (the first is the one to suggest)
    trainers: ClassVar[tuple[str, ...]] = ("sandwich",)

    @classmethod
    def check_space(cls, space: SearchSpace, options: SupernetOptions) -> None:
        """What ``nasforge validate`` can check of ``options`` against ``space`` before anything is
        built (a JobSpecError naming the key); the constructor checks the same."""

    def __init__(self, space: SearchSpace, options: SupernetOptions | Mapping[str, Any] | None = None):
        super().__init__()
        if options is None or isinstance(options, Mapping):
            options = self.Options.model_validate(dict(options or {}))
        self.space = space
        self.options = options

    @abstractmethod
    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor: ...

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module: ...

    @classmethod
    @abstractmethod
    def build_child(cls, space: SearchSpace, arch: Arch) -> nn.Module: ...

    @abstractmethod
    def input_shape(self, arch: Arch) -> tuple[int, ...]: ...

    #: "image": forward takes float (N, C, H, W); "tokens": int64 token ids (N, L)
    input_kind: ClassVar[str] = "image"

    def example_input(self, arch: Arch, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of ``n`` valid inputs for child ``arch``: standard-normal images by default."""
        return torch.randn(n, *self.input_shape(arch), generator=generator)
