"""Every registered method, found by listing the registry: a new method is tested here without
editing this file, by the conformance checks a plugin's own tests run too (mlebench.conformance):
its recipe is complete, every modality subset decodes, a few steps on one batch lower its loss,
and its checkpoint round-trips and is refused by another method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mlebench import conformance
from mlebench.cli import main
from mlebench.data import dataset_info
from mlebench.registry import build_method, default_method, method_entry, method_names

INFO = dataset_info("synthetic")
PAIR = ("rgb", "depth")
METHODS = method_names()


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """These tensors are tiny: on shared cores one thread is faster than two fighting."""


def test_the_registry_has_the_paper_methods():
    assert {"mlesam", "sam-lora", "cwsam", "cmnext"} <= set(METHODS)
    assert default_method() == "mlesam"
    for name in ("mlesam", "sam-lora", "cwsam", "cmnext"):
        entry = method_entry(name)
        assert entry.presets == ("tiny", "paper") and entry.weights_option is not None  # both sizes, real weights
        method = conformance.build_for_checks(name)
        assert type(method).eval_size("tiny") is None and type(method).eval_size("paper") == 1024


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", METHODS)
def test_every_method_passes_the_conformance_checks(name: str, check):
    check(name)


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_upsampling_predicts_what_the_plain_one_does(name: str):
    """``upsample_logits`` (channels-last, for speed) against a plain contiguous bilinear
    upsampling followed by ``max(1).indices``: the same predictions, on trained-like logits of
    the shipped stand-ins and the synthetic val images."""
    from mlebench.method import contiguous_upsampling
    from mlebench.data import load_dataset
    from mlebench.data.transforms import normalize_modality
    from mlebench.metrics import predict_labels

    torch.manual_seed(0)
    method = build_method(name, INFO, PAIR).eval()  # its default preset: a stand-in's peaky logits
    data = load_dataset("synthetic", None, "val", list(PAIR))
    batch = {m: torch.stack([normalize_modality(data[i][m], INFO.modality(m)) for i in range(2)]) for m in PAIR}
    with torch.no_grad():
        fast = method(batch).logits
        with contiguous_upsampling():
            plain = method(batch).logits
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(predict_labels(fast), plain.max(1).indices)


def test_weights_and_method_options_from_the_cli(tmp_path: Path):
    """--weights goes to the option the method registers; -o sets any option, type-checked."""
    runner = CliRunner()
    result = runner.invoke(main, ["params", "--method", "mlesam", "--preset", "tiny", "--json"])
    assert result.exit_code == 0
    bad = runner.invoke(main, ["run", "--steps", "1", "-o", "top_k=two", "--weights", "none",
                               "--results", str(tmp_path / "r.sqlite")])
    assert bad.exit_code == 1 and "method.top_k = 'two'" in bad.output
    assert not (tmp_path / "r.sqlite").exists()
    bad = runner.invoke(main, ["run", "--steps", "1", "-o", "top_k", "--results", str(tmp_path / "r.sqlite")])
    assert bad.exit_code == 2 and "'top_k' is not KEY=VALUE" in bad.output
