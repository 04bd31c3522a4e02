"""Datasets: ``load_dataset(spec) -> DataSplits`` (see :mod:`nasforge.data.loaders`)."""

from nasforge.data.loaders import (
    DATASET_NAMES,
    TORCHVISION_DATASETS,
    DatasetError,
    DataSplits,
    clear_cache,
    dataset_name_error,
    describe_inputs,
    load_dataset,
    preprocessing,
)

__all__ = ["DATASET_NAMES", "TORCHVISION_DATASETS", "DataSplits", "DatasetError", "clear_cache", "dataset_name_error",
           "describe_inputs", "load_dataset", "preprocessing"]
