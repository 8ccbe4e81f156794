"""Segmentation methods behind one interface (see ``methods.base``).

Importing this package registers every method.
"""

from methods.base import (
    MethodOutput,
    SegmentationMethod,
    build_method,
    default_method,
    method_names,
    register_method,
)

from methods import cmnext, cwsam, mlesam, sam_lora  # noqa: E402,F401  isort: skip  (each registers its methods)

__all__ = [
    "MethodOutput", "SegmentationMethod", "build_method", "default_method", "method_names", "register_method",
]  # fmt: skip
