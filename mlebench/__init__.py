"""mlebench: a benchmark and robustness suite for multi-modal semantic segmentation."""

from mlebench.errors import DataError, MlebenchError

__version__ = "0.1.0"

__all__ = ["DataError", "MlebenchError", "__version__"]
