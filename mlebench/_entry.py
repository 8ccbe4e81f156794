"""The ``mlebench`` console command's first code: Ctrl-C is a clean exit from the very start.

Until the command line is loaded, a SIGINT ends the process at once with status 130 and no
traceback (nothing has been done yet); then the default handler is back, and the CLI turns the
``KeyboardInterrupt`` into one line and status 130 wherever it happens
(:class:`mlebench.cli.options.Group`).
"""

from __future__ import annotations

import os
import signal
import sys


def _before_the_cli(signum: int, frame: object) -> None:
    sys.stderr.write("\nError: interrupted by Ctrl-C (SIGINT)\n")
    os._exit(128 + signal.SIGINT)


def entry() -> None:
    """``mlebench ...``."""
    signal.signal(signal.SIGINT, _before_the_cli)
    from mlebench.cli import main

    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
