"""The detection hold's screen (service/hold_screen.py): which events may wait for the next detection call."""

import numpy as np
import pytest

from runwatch.service.hold_screen import MAX_LAYOUTS, ValueBands

NAMES = ("loss", "reward", "lr")


def learned(rows, margin=0.5) -> ValueBands:
    bands = ValueBands(margin)
    bands.learn([(NAMES, None, np.array(rows, dtype=float))])
    return bands


def admits(bands: ValueBands, row, names=NAMES) -> bool:
    return bands.admits([(names, None, np.array([row], dtype=float))])


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([2.0, -3.0, 1e-3], True),  # inside every band
        ([1.0, -3.0, 1e-3], True),  # loss at 1.0: lo 1.9 - max(0.2, 0.5 * 2.1)
        ([0.8, -3.0, 1e-3], False),  # below it
        ([3.2, -3.0, 1e-3], False),  # a spike above 2.1 + 1.05
        ([2.0, -1.4, 1e-3], True),  # a negative metric's band is [-5 - 2.5, -3 + 2.5]
        ([2.0, -0.4, 1e-3], False),
        ([2.0, -3.0, 2e-3], False),  # a constant lr (band [5e-4, 1.5e-3]) that doubles
        ([2.0, -3.0, np.inf], False),
        ([np.nan, -3.0, 1e-3], False),
    ],
)
def test_band_per_metric(row, expected):
    bands = learned([[1.9, -5.0, 1e-3], [2.1, -3.0, 1e-3]])
    assert admits(bands, row) is expected


def test_a_metric_at_zero_admits_only_zero():
    bands = learned([[2.0, 0.0, 0.0]])
    assert admits(bands, [2.0, 0.0, 0.0])
    assert not admits(bands, [2.0, 0.0, 1e-9])


def test_a_metric_never_finite_admits_nothing():
    bands = learned([[2.0, np.nan, 1e-3], [2.0, np.nan, 1e-3]])
    assert not admits(bands, [2.0, 1.0, 1e-3])


def test_names_not_seen_and_each_call_replaces_the_last():
    bands = learned([[2.0, -3.0, 1e-3]])
    assert not admits(bands, [2.0], names=("loss",))
    bands.learn([(NAMES, None, np.array([[20.0, -3.0, 1e-3]]))])
    assert admits(bands, [25.0, -3.0, 1e-3]) and not admits(bands, [2.0, -3.0, 1e-3])


def test_layouts_of_one_call_are_merged_and_old_names_kept():
    bands = ValueBands(0.0)
    val = ("val/loss",)
    bands.learn([(val, None, np.array([[3.0]]))])
    bands.learn([(("loss",), None, np.array([[1.0]])), (("loss",), None, np.array([[2.0]]))])
    assert bands.admits([(("loss",), None, np.array([[1.5], [2.9]]))])  # [1 - 1, 2 + 1]
    assert bands.admits([(val, None, np.array([[3.0]]))])  # a set of names this call did not see: kept


def test_bounded_sets_of_names():
    bands = ValueBands(0.5)
    for i in range(MAX_LAYOUTS + 5):
        bands.learn([((f"m{i}",), None, np.array([[1.0]]))])
    assert len(bands._bands) <= MAX_LAYOUTS
    assert bands.admits([((f"m{MAX_LAYOUTS + 4}",), None, np.array([[1.0]]))])
