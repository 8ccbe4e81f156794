"""``python -m mlebench`` (also what ``torchrun -m mlebench`` runs)."""

from mlebench._entry import entry

entry()
