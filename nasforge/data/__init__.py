"""Datasets: ``load_dataset(spec) -> DataSplits`` (see :mod:`nasforge.data.loaders`)."""

from nasforge.data.loaders import (
    DATASET_NAMES,
    DATASETS,
    TORCHVISION_DATASETS,
    DatasetError,
    DatasetSource,
    DataSplits,
    clear_cache,
    dataset_name_error,
    describe_inputs,
    load_dataset,
    preprocessing,
)

__all__ = ["DATASETS", "DATASET_NAMES", "TORCHVISION_DATASETS", "DataSplits", "DatasetError", "DatasetSource", "clear_cache", "dataset_name_error",
           "describe_inputs", "load_dataset", "preprocessing"]
