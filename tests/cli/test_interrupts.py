"""Ctrl-C at any moment of a command — while Python starts, while the command line loads, while
torch loads inside a command, while training — ends with one line and status 130, never a
traceback; the command line itself imports nothing heavy, so that moment is short."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import subprocess_env


def test_the_command_line_imports_nothing_heavy():
    code = "import sys, mlebench.cli; print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("delay", [0.05, 0.4, 2.5])
def test_ctrl_c_at_any_moment_is_one_line_and_status_130(delay: float, small_synthetic: Path, tmp_path: Path):
    args = [sys.executable, "-m", "mlebench", "run", "--data-root", str(small_synthetic), "--steps", "50",
            "--weights", "none", "--results", str(tmp_path / "r.sqlite")]
    child = subprocess.Popen(args, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    # 130, or death by SIGINT, which a shell also reports as 130: CPython re-raises SIGINT at exit
    # when the interrupt landed inside code an extension module runs while it is imported (torch),
    # however the exception was handled afterwards. Seen at 2.2 s into `import mlebench.data`.
    assert child.returncode in (130, -signal.SIGINT), (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [line for line in err.splitlines() if line.strip()] == ["Error: interrupted by Ctrl-C (SIGINT)"]
