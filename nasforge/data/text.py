"""Text corpora for language models: ``pystdlib`` (available offline) and ``text`` (yours).

``pystdlib`` is the Python standard library's own source code: every top-level ``*.py`` file in
``sysconfig.get_paths()["stdlib"]`` (no sub-packages), read as bytes. ``text`` is the file or
folder ``evaluation.dataset.path`` names: one text file, or every text file under the folder
(recursively, sorted by relative path; hidden files and files with a NUL byte in their first
8 KiB, i.e. binary ones, are left out). Tokens are bytes (vocabulary 256, no tokenizer to ship).
The pystdlib corpus depends on the running Python version; ``describe_corpus()`` names the files
and their total size so a result can say what it saw.

Split (deterministic from ``spec.seed``): the documents (files; a corpus of fewer than
``MIN_DOCUMENTS`` files has each file cut into contiguous pieces until there are that many),
in sorted order, are permuted by ``numpy.random.default_rng(seed)``; documents are then given to
test until ``test_fraction`` of all bytes is reached, then to validation until ``val_fraction``,
the rest to train. Splitting by document (not by window) keeps near-identical text of one module
out of two splits. Each split's documents are concatenated (in permuted order) and cut into
non-overlapping windows of ``seq_len + 1`` tokens; ``X`` is the first ``seq_len`` tokens of a
window and ``y`` the next-token targets (``X`` shifted by one). Windows come in an order shuffled
by the seed (any prefix mixes files).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from nasforge.core.errors import NasforgeError

TEXT_DATASET_NAMES = ("pystdlib", "text")
VOCAB_SIZE = 256
#: a corpus of fewer files is cut into this many contiguous pieces, so that it splits three ways
MIN_DOCUMENTS = 100


def stdlib_files() -> list[Path]:
    """The corpus files: top-level ``*.py`` files of the standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise NasforgeError(f"evaluation.dataset.name: pystdlib found no *.py files under {root}")
    return files


def text_files(path: str | Path) -> list[Path]:
    """The files of a ``text`` corpus: the file itself, or the text files under the folder."""
    root = Path(path).expanduser()
    if root.is_file():
        if _binary(root):
            raise NasforgeError(f"evaluation.dataset.path: {path} is a binary file (it holds NUL bytes), not "
                                "text; give a text file or a folder of them")
        return [root]
    if not root.is_dir():
        raise NasforgeError(f"evaluation.dataset.path: {path} does not exist; give a text file or a folder of them")
    files = [f for f in sorted(root.rglob("*"))
             if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)
             and not _binary(f)]
    if not files:
        raise NasforgeError(f"evaluation.dataset.path: {path} holds no text file (hidden and binary files are "
                            "left out); give a text file or a folder of them")
    return files


def _binary(f: Path) -> bool:
    """A NUL byte in the first 8 KiB: a binary file, not text."""
    with f.open("rb") as fh:
        return b"\0" in fh.read(8192)


def corpus_files(name: str = "pystdlib", path: str | Path | None = None) -> list[Path]:
    if name == "pystdlib":
        return stdlib_files()
    if name == "text":
        if path is None:
            raise NasforgeError("evaluation.dataset.path: required for dataset 'text'; set it to a text file or a "
                                "folder of text files")
        return text_files(path)
    raise NasforgeError(f"evaluation.dataset.name: {name!r} is not a text dataset ({', '.join(TEXT_DATASET_NAMES)})")


def describe_corpus(name: str = "pystdlib", path: str | Path | None = None) -> dict[str, object]:
    files = corpus_files(name, path)
    root = files[0].parent if name == "pystdlib" else Path(path or files[0]).expanduser()
    return {"root": str(root), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def _documents(files: list[Path]) -> list[bytes]:
    blobs = [f.read_bytes() for f in files]
    if len(blobs) >= MIN_DOCUMENTS:
        return blobs
    pieces = -(-MIN_DOCUMENTS // len(blobs))  # per file
    out = []
    for b in blobs:
        step = max(1, -(-len(b) // pieces))
        out += [b[i : i + step] for i in range(0, len(b), step)]
    return out


def split_text(seed: int, val_fraction: float, test_fraction: float, seq_len: int, name: str = "pystdlib",
               path: str | Path | None = None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val, test), each ``(X, y)`` int64 arrays of shape (N, seq_len) (module docstring)."""
    blobs = _documents(corpus_files(name, path))
    order = np.random.default_rng(seed).permutation(len(blobs))
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
                f"evaluation.dataset: the {('train', 'val', 'test')[k]} split of {name} holds fewer than "
                f"seq_len + 1 = {seq_len + 1} tokens; lower seq_len or change val_fraction/test_fraction"
            )
        windows = tokens[: n * (seq_len + 1)].reshape(n, seq_len + 1).astype(np.int64)
        windows = windows[np.random.default_rng([seed, k]).permutation(n)]
        out.append((np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])))
    return tuple(out)
