"""``python -m mlebench`` (also what ``torchrun -m mlebench`` runs)."""

from mlebench.cli import main

main()
