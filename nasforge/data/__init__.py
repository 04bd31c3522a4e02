"""Datasets: ``load_dataset(spec) -> DataSplits`` (see :mod:`nasforge.data.loaders`)."""

from nasforge.data.loaders import (
    DATASET_NAMES,
    DatasetError,
    DataSplits,
    clear_cache,
    describe_inputs,
    load_dataset,
    preprocessing,
)

__all__ = ["DATASET_NAMES", "DataSplits", "DatasetError", "clear_cache", "describe_inputs", "load_dataset", "preprocessing"]
