"""Protocol expansions and summaries."""

from __future__ import annotations

import pytest

from mlebench.corruptions import Corruption
from mlebench.data import dataset_info
from mlebench.errors import ConfigError
from mlebench.protocols import ALL, CaseResult, EvalCase, SummaryRow, case_label, get_protocol, protocol_names
from mlebench.protocols.missing_modality import all_subsets, expected_miou
from mlebench.protocols.noise import noise_corruptions

RDEL = ("rgb", "depth", "event", "lidar")
DELIVER = dataset_info("deliver")


def test_registry():
    assert {"full", "missing-modality", "noise", "conditions"} <= set(protocol_names())
    with pytest.raises(ConfigError, match="unknown protocol 'robust'; known: conditions, full"):
        get_protocol("robust")


def test_full_is_the_training_modalities():
    assert get_protocol("full").cases(RDEL, DELIVER) == [EvalCase(RDEL)]


def test_missing_modality_expands_to_every_non_empty_subset():
    cases = get_protocol("missing-modality").cases(RDEL, DELIVER)
    subsets = [c.test_modalities for c in cases]
    assert len(subsets) == 15 == len(set(subsets))
    assert subsets[:4] == [("rgb",), ("depth",), ("event",), ("lidar",)] and subsets[-1] == RDEL
    # Each subset keeps the training order, so 'depth,rgb' and 'rgb,depth' are one case.
    assert all(list(s) == sorted(s, key=RDEL.index) for s in subsets)
    assert all(c.condition == ALL and c.corruption is None for c in cases)
    assert len(get_protocol("missing-modality").cases(("frame", "lidar"), dataset_info("muses"))) == 3


def test_expected_miou_by_hand():
    # Two modalities: P({a}) = P({b}) = p(1-p), P({a,b}) = (1-p)^2, renormalised without {}.
    values = {("a",): 0.2, ("b",): 0.4, ("a", "b"): 0.6}
    p = 0.2
    w1, w2 = p * (1 - p), (1 - p) ** 2
    expected = (w1 * 0.2 + w1 * 0.4 + w2 * 0.6) / (2 * w1 + w2)
    assert expected_miou(values, ["a", "b"], p) == pytest.approx(expected)
    assert all_subsets("abc") == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    # Three modalities, p = 0.5: every non-empty subset is equally likely (1/8 each, renormalised
    # over 7), so the expectation is the plain mean.
    three = {s: float(i) for i, s in enumerate(all_subsets("abc"))}
    assert expected_miou(three, "abc", 0.5) == pytest.approx(sum(range(7)) / 7)
    # p = 0.1: weights 0.009 (singles), 0.081 (pairs), 0.729 (all three), out of 0.999.
    assert expected_miou(three, "abc", 0.1) == pytest.approx(
        (0.009 * (0 + 1 + 2) + 0.081 * (3 + 4 + 5) + 0.729 * 6) / 0.999
    )


def test_missing_modality_summary_rows():
    protocol = get_protocol("missing-modality")
    results = [CaseResult(c, miou=0.1 * (i + 1), pixel_accuracy=0, mean_f1=0, iou=[], samples=1)
               for i, c in enumerate(protocol.cases(("a", "b"), DELIVER))]
    rows = {r.metric: r.value for r in protocol.summary(results, ("a", "b"))}
    assert rows["miou_avg"] == pytest.approx(0.2)
    assert set(rows) == {"miou_avg", "miou_e_p0.2", "miou_e_p0.1", "miou_e_p0.05"}
    # By hand: subsets {a}, {b}, {a,b} have mIoU 0.1, 0.2, 0.3 and weights p(1-p), p(1-p),
    # (1-p)^2; the expectation is (1-p)(0.3p + 0.3(1-p)) / ((1-p)(1+p)) = 0.3 / (1 + p).
    for p in (0.2, 0.1, 0.05):
        assert rows[f"miou_e_p{p:g}"] == pytest.approx(0.3 / (1 + p))
    # Each summary says which cases it sums with which weights (the statistics layer resamples
    # those cases together): the weights reproduce the value.
    by_case = {r.case: r.miou for r in results}
    p = 0.2
    w1, w2 = p * (1 - p), (1 - p) ** 2
    for row in protocol.summary(results, ("a", "b")):
        assert row.value == pytest.approx(sum(w * by_case[c] for c, w in row.terms), abs=1e-15)
        assert sum(w for _, w in row.terms) == pytest.approx(1.0)
        if row.metric == "miou_avg":
            assert [w for _, w in row.terms] == pytest.approx([1 / 3] * 3)
        if row.metric == "miou_e_p0.2":
            assert [w for _, w in row.terms] == pytest.approx([w1 / (2 * w1 + w2)] * 2 + [w2 / (2 * w1 + w2)])


def test_noise_cases_cover_each_modality_with_the_papers_levels():
    cases = get_protocol("noise").cases(RDEL, DELIVER)
    assert cases[0] == EvalCase(RDEL)  # clean reference
    names = {c.corruption.name for c in cases[1:]}
    for m in RDEL:
        assert {f"gaussian-50@{m}", f"uniform-100@{m}", f"missing_pixels-0.25@{m}",
                f"missing_pixels-0.75@{m}", f"salt_pepper-0.05@{m}"} <= names
    per_modality = len(noise_corruptions("rgb"))
    assert len(cases) == 1 + 4 * per_modality == 1 + len(names)  # no duplicates
    assert all(c.test_modalities == RDEL for c in cases)
    assert len(get_protocol("noise", sweep=False).cases(RDEL, DELIVER)) == 1 + 4 * 2
    assert Corruption("gaussian", 50.0, "rgb") in {c.corruption for c in cases}


def test_conditions_follow_the_data_set():
    cases = get_protocol("conditions").cases(RDEL, DELIVER)
    assert [c.condition for c in cases] == [ALL, "cloud", "fog", "night", "rain", "sun", "motionblur",
                                            "overexposure", "underexposure", "lidarjitter", "eventlowres"]
    muses = get_protocol("conditions").cases(("frame",), dataset_info("muses"))
    assert {c.condition for c in muses} == {ALL, "clear", "fog", "rain", "snow", "day", "night"}
    assert get_protocol("conditions").cases(("rgb",), dataset_info("mcubes")) == [EvalCase(("rgb",))]


def test_tsne_cases_and_summary(tmp_path):
    import numpy as np

    protocol = get_protocol("tsne", pixels_per_class=20, top_classes=2)
    assert protocol.collect_pixels == 20
    cases = protocol.cases(RDEL, DELIVER)
    assert len(cases) == 5 * 5  # each sensor failure x (4 single modalities + all four)
    assert {c.condition for c in cases} == {"motionblur", "overexposure", "underexposure", "lidarjitter",
                                            "eventlowres"}
    assert get_protocol("tsne").cases(("rgb",), dataset_info("mcubes")) == [EvalCase(("rgb",))]
    rng = np.random.default_rng(0)
    # Two well separated classes (ids 0 and 6) and a rare third one (id 3, not in the top 2).
    pixels = {0: (rng.normal(0, 1, (20, 8)), 500), 6: (rng.normal(10, 1, (20, 8)), 900),
              3: (rng.normal(5, 1, (5, 8)), 5)}
    mixed = {0: (rng.normal(0, 1, (20, 8)), 500), 6: (rng.normal(0, 1, (20, 8)), 900)}
    results = [CaseResult(cases[0], 0, 0, 0, [], 1, pixels=pixels), CaseResult(cases[1], 0, 0, 0, [], 1, pixels=mixed)]
    rows = protocol.summary(results, RDEL)
    assert [r.metric for r in rows] == ["silhouette", "silhouette"]
    assert rows[0].value > 0.8 > 0.2 > rows[1].value
    assert rows[0].test_modalities == cases[0].test_modalities and rows[0].condition == "motionblur"
    # One grid figure for the run, returned as PNG bytes (the run stores them): a panel per case
    # side by side, the legend outside them. Nothing is written to disk.
    figures = protocol.figures(results, RDEL)
    assert sorted(figures) == ["tsne.png"] and not list(tmp_path.iterdir())
    import io

    from PIL import Image

    grid = Image.open(io.BytesIO(figures["tsne.png"]))
    width, height = grid.size
    assert width > 2 * height * 0.9  # two panels in one row, plus the legend column
    with pytest.raises(ConfigError, match="unknown class"):
        get_protocol("tsne", classes=["Unicorn"]).cases(RDEL, DELIVER)


def test_one_case_label_wherever_a_case_is_named():
    """Cases are named by one function: the run's table, the store's case keys, comparisons,
    seed summaries and the gate all show "rgb-depth | fog | gaussian-50@rgb"."""
    from mlebench.report.console import format_results
    from mlebench.results.rows import CaseKey

    noise = Corruption.parse("gaussian-50@rgb")
    case = EvalCase(("rgb", "depth"), "fog", noise)
    assert case_label(("rgb", "depth"), "fog", "gaussian-50@rgb") == "rgb-depth | fog | gaussian-50@rgb"
    assert case.label == CaseKey.of("noise", case).label == case_label("rgb,depth", "fog", noise.name)
    assert EvalCase(("rgb",)).label == "rgb" and case_label("rgb,lidar", "all", "none") == "rgb-lidar"
    assert case_label("*", metric="miou_avg") == "miou_avg"
    assert case_label(("event",), "motionblur", metric="silhouette") == "silhouette | event | motionblur"
    table = format_results([CaseResult(case, 0.5, 0.6, 0.7, [], 3)],
                           [SummaryRow("silhouette", 0.25, ("event",), "motionblur")])
    assert [line.split("  ")[0].strip() for line in table.splitlines()[1:]] == \
        ["rgb-depth | fog | gaussian-50@rgb", "silhouette | event | motionblur"]
