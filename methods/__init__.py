"""The built-in segmentation methods: MLE-SAM (and its ablations), SAM-LoRA, CWSAM and CMNeXt.

Each implements :class:`mlebench.method.SegmentationMethod` and registers through the
``mlebench.methods`` entry point group, exactly as a plugin from another package would (see
docs/adding-a-method.md); this package imports only the suite's contract and shared helpers.
"""

from pathlib import Path

#: the tiny presets' pre-trained stand-in backbones (``mlebench pretrain``), one per backbone;
#: each ``NAME.pt`` has a ``NAME.json`` beside it with its recipe and checksum
ASSETS = Path(__file__).parent / "assets"
