"""ExactSum: the correctly rounded sum, whatever the chunking, order or merging."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from evalloss.stats.exact import ExactSum

finite = st.floats(min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(finite, max_size=300), st.integers(min_value=1, max_value=50), st.randoms())
def test_equals_fsum_for_any_chunking_and_order(
    values: list[float], chunk: int, rnd: random.Random
) -> None:
    total = ExactSum()
    for i in range(0, len(values), chunk):
        total.add(values[i : i + chunk])
    shuffled = values[:]
    rnd.shuffle(shuffled)
    halves = ExactSum(), ExactSum()
    for i, v in enumerate(shuffled):
        halves[i % 2].add([v])
    halves[0].merge(halves[1])
    assert total.value == math.fsum(values)
    assert halves[0].value == math.fsum(values)


def test_beats_naive_summation() -> None:
    values = [1e16, 1.0, -1e16] * 1000
    total = ExactSum()
    total.add(values)
    assert sum(values) != 1000.0  # the naive sum loses the ones
    assert total.value == 1000.0


def test_overflow_reads_as_inf() -> None:
    total = ExactSum()
    total.add([1e308, 1e308])
    assert total.value == math.inf
