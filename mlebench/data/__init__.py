"""Data sets: the three real layouts and the embedded synthetic benchmark.

``load_dataset(name, root, split, modalities, case=None)`` is the one way in; importing this
package registers every loader.
"""

from mlebench.data.base import (
    IGNORE_INDEX,
    DatasetInfo,
    ModalitySpec,
    MultiModalDataset,
    SampleRef,
    data_root_containing,
    dataset_info,
    dataset_names,
    load_dataset,
    register_dataset,
)

# Importing the loaders registers them.
from mlebench.data import deliver, mcubes, muses, synthetic  # noqa: E402,F401  isort: skip

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "ModalitySpec",
    "MultiModalDataset",
    "SampleRef",
    "data_root_containing",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "register_dataset",
]
