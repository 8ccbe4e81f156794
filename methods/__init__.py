"""Segmentation methods behind one interface (see ``methods.base``).

Importing this package registers every method.
"""

from methods.base import MethodOutput, SegmentationMethod, build_method, method_names, register_method

from methods import mlesam  # noqa: E402,F401  isort: skip  (registers the mlesam* methods)

__all__ = ["MethodOutput", "SegmentationMethod", "build_method", "method_names", "register_method"]
