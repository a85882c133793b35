"""rapidfuzz's Jaro-Winkler against the hub's earlier hand-written one, where the match thresholds decide.

The corpus (``bench/similarity.py``) is what the matcher really compares: the benchmark
generator's golden and incoming records (typos, nicknames, email variants, namesakes,
twins), every incoming record against each golden record it shares a blocking key with,
on every attribute the rules compare by similarity, and same-initial name pairs.
"""

from __future__ import annotations

import time

import pytest

from bench.similarity import THRESHOLDS, compared_pairs, hand_written_jaro_winkler, threshold_differences
from customers.normalize import jaro_winkler


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str, str]]:
    return compared_pairs(golden=3000, incoming=1000)


def test_rapidfuzz_is_the_reference_jaro_winkler_on_what_the_matcher_compares(pairs):
    assert len(pairs) > 20000
    for attribute, left, right in pairs:
        expected, _ = hand_written_jaro_winkler(left, right, strcmp95=True)
        assert jaro_winkler(left, right) == pytest.approx(expected, abs=1e-9), (attribute, left, right)
    assert jaro_winkler("", "") == 0.0 and jaro_winkler("", "x") == 0.0 and jaro_winkler("same", "same") == 1.0
    assert jaro_winkler("martha", "marhta") == pytest.approx(0.961, abs=0.001)


def test_decisions_at_the_thresholds_differ_only_where_the_old_version_halved_an_odd_count(pairs):
    """Where a threshold can decide, the only difference from the earlier version: an odd out-of-order count.

    There rapidfuzz counts one transposition fewer than the exact half, so the pair scores
    higher, never lower: a pair can only newly clear a threshold.
    """
    for attribute, left, right in pairs:
        old, out_of_order = hand_written_jaro_winkler(left, right)
        new = jaro_winkler(left, right)
        if max(old, new) < min(THRESHOLDS):
            continue
        if out_of_order % 2 == 0:
            assert new == pytest.approx(old, abs=1e-9), (attribute, left, right)
        else:
            assert new > old, (attribute, left, right)
    differences = threshold_differences(pairs)
    # Few, and all one way: typos of one name ("ughes"/"hughes") and close names ("baker"/"barker",
    # which the rules then tell apart by birth date, email, phone or postcode) newly clear a threshold.
    assert 0 < len(differences) < 0.002 * len(pairs)
    assert all(d["new"] > d["old"] and d["out_of_order"] % 2 for d in differences)


def test_rapidfuzz_is_faster_than_the_hand_written_version(pairs):
    """Not a benchmark (bench/similarity.py is): a check that the switch was worth making."""
    values = [(left, right) for _, left, right in pairs[:20000]]
    started = time.perf_counter()
    for left, right in values:
        hand_written_jaro_winkler(left, right)
    old = time.perf_counter() - started
    started = time.perf_counter()
    for left, right in values:
        jaro_winkler(left, right)
    assert (time.perf_counter() - started) * 3 < old
