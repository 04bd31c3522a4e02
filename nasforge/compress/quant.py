"""Uniform weight quantization: per output channel or group-wise, symmetric or asymmetric.

``quantize(w, bits, ...)`` returns integer codes (0 .. 2**bits - 1) with fp16 scales (and uint8
zero points when asymmetric); ``dequantize`` rebuilds the float weight. Fake-quant for evaluation
is ``dequantize(quantize(w))`` and equals what the exported, packed weight loads back to. Zeros
of ``w`` stay exactly zero (the symmetric grid and the asymmetric zero point both hold 0).
``pack_bits`` / ``unpack_bits`` store b-bit codes densely (true packed size ceil(n*b/8) bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeight:
    """Codes (uint8, one per weight, same shape as the weight), fp16 scales and uint8 zeros.

    ``scale`` / ``zero`` have shape (out_channels, n_groups); ``zero`` is None when symmetric.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    group_size: int  # weights of a row per scale (the whole row when per channel)
    shape: tuple[int, ...]


def _rows(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """w as (out, n_groups, group_size), zero padded at the end of each row."""
    out = w.shape[0]
    row = w.reshape(out, -1)
    n = row.shape[1]
    n_groups = math.ceil(n / group_size)
    pad = n_groups * group_size - n
    if pad:
        row = torch.nn.functional.pad(row, (0, pad))
    return row.reshape(out, n_groups, group_size), n


def quantize(w: torch.Tensor, bits: int, *, granularity: str = "channel", group_size: int = 128,
             symmetric: bool = True) -> QuantizedWeight:
    """Round-to-nearest quantization of ``w`` (dim 0 = output channels) to ``bits`` (2..8)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2..8, got {bits}")
    w = w.detach().float()
    gs = w[0].numel() if granularity == "channel" else int(group_size)
    g, n = _rows(w, gs)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        amax = g.abs().amax(dim=2)
        scale = (amax / qmax).clamp_min(1e-12).half().float()
        scale = torch.where(scale == 0, torch.full_like(scale, 1e-7), scale)
        q = torch.clamp(torch.round(g / scale[..., None]), -qmax, qmax)
        codes = (q + qmax).to(torch.uint8)
        zero = None
    else:
        qmax = 2**bits - 1
        lo = g.amin(dim=2).clamp(max=0.0)
        hi = g.amax(dim=2).clamp(min=0.0)
        scale = ((hi - lo) / qmax).clamp_min(1e-12).half().float()
        scale = torch.where(scale == 0, torch.full_like(scale, 1e-7), scale)
        zero_f = torch.clamp(torch.round(-lo / scale), 0, qmax)
        codes = torch.clamp(torch.round(g / scale[..., None]) + zero_f[..., None], 0, qmax).to(torch.uint8)
        zero = zero_f.to(torch.uint8)
    codes = codes.reshape(w.shape[0], -1)[:, :n].reshape(w.shape)
    return QuantizedWeight(codes, scale.half(), zero, bits, gs, tuple(w.shape))


def dequantize(q: QuantizedWeight) -> torch.Tensor:
    """The float32 weight the codes stand for."""
    out = q.shape[0]
    g, n = _rows(q.codes.float(), q.group_size)
    scale = q.scale.float()[..., None]
    if q.zero is None:
        w = (g - (2 ** (q.bits - 1) - 1)) * scale
    else:
        w = (g - q.zero.float()[..., None]) * scale
    return w.reshape(out, -1)[:, :n].reshape(q.shape).contiguous()


def fake_quant(w: torch.Tensor, bits: int, **kw: object) -> torch.Tensor:
    """``dequantize(quantize(w, bits))``; float bit-widths (16/32) return w cast through that dtype."""
    if bits == 32:
        return w.detach().float().clone()
    if bits == 16:
        return w.detach().half().float()
    return dequantize(quantize(w, bits, **kw))  # type: ignore[arg-type]


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a flat tensor of integers in 0..2**bits-1 into ceil(n*bits/8) uint8 bytes (LSB first)."""
    v = values.reshape(-1).to(torch.int64)
    n = v.numel()
    shifts = torch.arange(bits, dtype=torch.int64)
    bitmat = ((v[:, None] >> shifts) & 1).reshape(-1)  # n*bits bits, value-major, LSB first
    total = math.ceil(n * bits / 8) * 8
    if total > bitmat.numel():
        bitmat = torch.cat([bitmat, bitmat.new_zeros(total - bitmat.numel())])
    weights = (2 ** torch.arange(8, dtype=torch.int64))
    return (bitmat.reshape(-1, 8) * weights).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``n`` values as int64."""
    b = packed.reshape(-1).to(torch.int64)
    bitmat = ((b[:, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: n * bits]
    return (bitmat.reshape(n, bits) * (2 ** torch.arange(bits, dtype=torch.int64))).sum(dim=1)
