"""``streak_counts`` gives the counts of the value-by-value patience loop it replaced, for any hits and carry."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from runwatch.models.streaks import streak_counts


def _loop(hits: list[bool], carried: int) -> list[int]:
    out, count = [], carried
    for hit in hits:
        count = count + 1 if hit else 0
        out.append(count)
    return out


@given(st.lists(st.booleans(), max_size=60), st.integers(0, 1000))
def test_counts_equal_the_value_by_value_loop(hits: list[bool], carried: int) -> None:
    assert streak_counts(np.array(hits, dtype=bool), carried).tolist() == _loop(hits, carried)


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 59))
def test_any_cut_into_two_blocks_gives_the_same_counts(hits: list[bool], cut: int) -> None:
    whole = streak_counts(np.array(hits, dtype=bool))
    first = streak_counts(np.array(hits[:cut], dtype=bool))
    carried = int(first[-1]) if len(first) else 0
    second = streak_counts(np.array(hits[cut:], dtype=bool), carried)
    assert np.concatenate([first, second]).tolist() == whole.tolist()
