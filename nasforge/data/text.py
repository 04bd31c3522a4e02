"""Text corpora for language models, available offline: ``pystdlib``.

``pystdlib`` is the Python standard library's own source code: every top-level ``*.py`` file in
``sysconfig.get_paths()["stdlib"]`` (no sub-packages), read as bytes. Tokens are bytes
(vocabulary 256, no tokenizer to ship). The corpus depends on the running Python version;
``describe_corpus()`` names the files and their total size so a result can say what it saw.

Split (deterministic from ``spec.seed``): the files, in sorted-name order, are permuted by
``numpy.random.default_rng(seed)``; files are then given to test until ``test_fraction`` of all
bytes is reached, then to validation until ``val_fraction``, the rest to train. Splitting by file
(not by window) keeps near-identical text of one module out of two splits. Each split's files are
concatenated (in permuted order) and cut into non-overlapping windows of ``seq_len + 1`` tokens;
``X`` is the first ``seq_len`` tokens of a window and ``y`` the next-token targets (``X`` shifted
by one). Windows come in an order shuffled by the seed (any prefix mixes files).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from nasforge.core.errors import NasforgeError

TEXT_DATASET_NAMES = ("pystdlib",)
VOCAB_SIZE = 256


def stdlib_files() -> list[Path]:
    """The corpus files: top-level ``*.py`` files of the standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise NasforgeError(f"evaluation.dataset.name: pystdlib found no *.py files under {root}")
    return files


def describe_corpus() -> dict[str, object]:
    files = stdlib_files()
    return {"root": str(files[0].parent), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def split_text(seed: int, val_fraction: float, test_fraction: float,
               seq_len: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val, test), each ``(X, y)`` int64 arrays of shape (N, seq_len) (module docstring)."""
    files = stdlib_files()
    blobs = [f.read_bytes() for f in files]
    order = np.random.default_rng(seed).permutation(len(files))
    total = sum(len(b) for b in blobs)
    parts: list[list[bytes]] = [[], [], []]   # train, val, test
    taken_test = taken_val = 0
    for i in order:
        b = blobs[int(i)]
        if taken_test < test_fraction * total:
            parts[2].append(b)
            taken_test += len(b)
        elif taken_val < val_fraction * total:
            parts[1].append(b)
            taken_val += len(b)
        else:
            parts[0].append(b)
    out = []
    for k, chunks in enumerate(parts):
        tokens = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        n = len(tokens) // (seq_len + 1)
        if n < 1:
            raise NasforgeError(
                f"evaluation.dataset: the {('train', 'val', 'test')[k]} split of pystdlib holds fewer than "
                f"seq_len + 1 = {seq_len + 1} tokens; lower seq_len or change val_fraction/test_fraction"
            )
        windows = tokens[: n * (seq_len + 1)].reshape(n, seq_len + 1).astype(np.int64)
        windows = windows[np.random.default_rng([seed, k]).permutation(n)]
        out.append((np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])))
    return tuple(out)
