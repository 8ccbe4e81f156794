"""The one reader of torch.save files (mlebench.weights.load_tensor_file): a file of another kind
is named by what it is before torch reads it, a pickle holding objects is refused without being
unpickled, a truncated archive is named damaged — one line each, naming the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from mlebench.engine.checkpoint import read_checkpoint
from mlebench.errors import ConfigError
from mlebench.registry import build_method
from mlebench.data import dataset_info
from mlebench.weights import load_tensor_file, read_weights


class _Payload:
    """An object a malicious pickle could carry (weights_only refuses to rebuild it)."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _files(tmp: Path) -> dict[str, Path]:
    store = tmp / "results.sqlite"
    sqlite3.connect(store).execute("CREATE TABLE t (x)").connection.close()
    notes = tmp / "notes.md"
    notes.write_text("# my notes\n")
    image = tmp / "figure.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    good = tmp / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    truncated = tmp / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pickled = tmp / "pickled.pt"
    torch.save({"w": torch.ones(2), "payload": _Payload()}, pickled)
    return {"store": store, "notes": notes, "image": image, "empty": empty, "truncated": truncated,
            "pickled": pickled, "folder": tmp}


@pytest.mark.parametrize("kind,message", [
    ("store", "checkpoint {path} is an SQLite database (a results store), not a checkpoint"),
    ("notes", "checkpoint {path} is a text file, not a checkpoint"),
    ("image", "checkpoint {path} is a PNG image, not a checkpoint"),
    ("empty", "checkpoint {path} is an empty file (0 bytes), not a checkpoint"),
    ("truncated", "cannot read checkpoint {path}: it is damaged or truncated"),
    ("pickled", "checkpoint {path} is not a plain weights file: it holds Python objects that only unpickling "
                "could rebuild, which could run code; mlebench reads tensors only"),
    ("folder", "checkpoint {path} is a directory, not a checkpoint file"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_by_what_it_is(tmp_path: Path, kind: str, message: str,
                                                                capsys: pytest.CaptureFixture):
    path = _files(tmp_path)[kind]
    with pytest.raises(ConfigError) as raised:
        read_checkpoint(path)
    text = str(raised.value)
    assert text.startswith(message.format(path=path)) and "\n" not in text
    assert "weights_only" not in text and "please file an issue" not in text  # no advice to unpickle
    assert "this must never run" not in capsys.readouterr().out


def test_weights_options_say_the_same(tmp_path: Path):
    files = _files(tmp_path)
    with pytest.raises(ConfigError, match=f"SAM2 checkpoint {files['notes']} is a text file, not a SAM2 checkpoint"):
        build_method("mlesam", dataset_info("synthetic"), ["rgb"], "tiny", sam2_checkpoint=str(files["notes"]))
    with pytest.raises(ConfigError, match="weights .* is an SQLite database"):
        read_weights(files["store"], "weights")
    assert load_tensor_file(tmp_path / "good.pt", "weights")["w"].tolist() == [1.0, 1.0]


def test_the_cli_names_the_file_in_one_line(tmp_path: Path, small_synthetic: Path, work: Path):
    from .helpers import FAST, invoke

    files = _files(tmp_path)
    data = ["--data-root", small_synthetic]
    result = invoke("eval", *data, "--checkpoint", files["store"], "--results", tmp_path / "r.sqlite", *FAST)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and errors == [
        f"Error: checkpoint {files['store']} is an SQLite database (a results store), not a checkpoint "
        "(a file written by torch.save)"]
    result = invoke("run", *data, "--weights", files["notes"], "--steps", "1", "--results", tmp_path / "r.sqlite")
    assert result.exit_code == 1 and f"{files['notes']} is a text file" in result.output
    assert not (tmp_path / "r.sqlite").exists()
