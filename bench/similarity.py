"""Jaro-Winkler: rapidfuzz (``customers.normalize.jaro_winkler``) against the hub's earlier hand-written one.

    HUB_DEBUG=true python bench/similarity.py [--golden 10000] [--incoming 4000] [--rounds 5]

The corpus is what the matcher compares: the labelled benchmark's records
(``bench/make_customers.py``), every incoming record against each golden record it shares
a blocking key with, on every attribute the rules compare by similarity, and every
incoming first name and surname against every golden one with the same initial. Both
functions run over the whole corpus ``--rounds`` times, alternating which goes first;
the best round of each counts (the machine is shared). The earlier version had an LRU
cache in front; both are timed without one, on distinct pairs, as a cache would see
them the first time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

import django  # noqa: E402

django.setup()

from bench.make_customers import CustomerGenerator  # noqa: E402
from customers.cim import parse_individual  # noqa: E402
from customers.normalize import jaro_winkler  # noqa: E402
from customers.resolution.blocking import blocking_keys, profile_from_source  # noqa: E402
from customers.resolution.rules import FUZZY_ATTRIBUTES  # noqa: E402

# Every threshold the default match rules use.
THRESHOLDS = (0.85, 0.9, 0.92)


def hand_written_jaro_winkler(a: str, b: str, *, strcmp95: bool = False) -> tuple[float, int]:
    """The hub's Jaro-Winkler before rapidfuzz (customers/normalize.py until issue 13), and its out-of-order count.

    ``strcmp95`` does two things as Winkler's strcmp95 and rapidfuzz do: half the
    out-of-order matches rounded down (the earlier version took the exact half), and the
    prefix bonus only above a Jaro similarity of 0.7 (at most 0.82 then: below every threshold).
    """
    if a == b:
        return (1.0 if a else 0.0), 0
    if not a or not b:
        return 0.0, 0
    window = max(len(a), len(b)) // 2 - 1
    a_hit = [False] * len(a)
    b_hit = [False] * len(b)
    matches = 0
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not b_hit[j] and b[j] == ch:
                a_hit[i] = b_hit[j] = True
                matches += 1
                break
    if not matches:
        return 0.0, 0
    a_seq = [ch for ch, hit in zip(a, a_hit, strict=True) if hit]
    b_seq = [ch for ch, hit in zip(b, b_hit, strict=True) if hit]
    out_of_order = sum(x != y for x, y in zip(a_seq, b_seq, strict=True))
    transpositions = out_of_order // 2 if strcmp95 else out_of_order / 2
    jaro = (matches / len(a) + matches / len(b) + (matches - transpositions) / matches) / 3
    if strcmp95 and jaro <= 0.7:
        return jaro, out_of_order
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1 - jaro), out_of_order


def compared_pairs(golden: int, incoming: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(attribute, incoming value, golden value): the pairs blocking brings together, and same-initial names."""
    generator = CustomerGenerator(golden=golden, incoming=incoming, seed=seed)
    golden_profiles = [profile_from_source(parse_individual(item.record)) for item in generator.golden()]
    incoming_profiles = [profile_from_source(parse_individual(item.record)) for item in generator.incoming()]
    by_key: dict[tuple[str, str], list[int]] = {}
    for index, profile in enumerate(golden_profiles):
        for key in blocking_keys(profile):
            by_key.setdefault(key, []).append(index)
    pairs = set()
    for profile in incoming_profiles:
        candidates = {i for key in blocking_keys(profile) for i in by_key.get(key, ())}
        for i in candidates:
            for attribute in FUZZY_ATTRIBUTES:
                for left in profile.keys(attribute):
                    right_values = golden_profiles[i].keys(attribute)
                    pairs.update((attribute, left, right) for right in right_values if left != right)
    for attribute in ("first_name", "last_name"):
        known = {value for profile in golden_profiles for value in profile.keys(attribute)}
        for left in {value for profile in incoming_profiles for value in profile.keys(attribute)}:
            pairs.update((attribute, left, right) for right in known if right[:1] == left[:1] and right != left)
    return sorted(pairs)


def threshold_differences(pairs: list[tuple[str, str, str]]) -> list[dict[str, object]]:
    """The pairs on which the two versions decide a threshold differently."""
    found = []
    for attribute, left, right in pairs:
        old, out_of_order = hand_written_jaro_winkler(left, right)
        new = jaro_winkler(left, right)
        for threshold in THRESHOLDS:
            if (old >= threshold) != (new >= threshold):
                found.append(
                    {
                        "attribute": attribute,
                        "pair": [left, right],
                        "threshold": threshold,
                        "old": round(old, 4),
                        "new": round(new, 4),
                        "out_of_order": out_of_order,
                    }
                )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=int, default=10_000)
    parser.add_argument("--incoming", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pairs = compared_pairs(args.golden, args.incoming)
    values = [(left, right) for _, left, right in pairs]
    best = {"hand_written": float("inf"), "rapidfuzz": float("inf")}
    for round_no in range(args.rounds):
        order = ["hand_written", "rapidfuzz"] if round_no % 2 == 0 else ["rapidfuzz", "hand_written"]
        for name in order:
            started = time.perf_counter()
            if name == "hand_written":
                for left, right in values:
                    hand_written_jaro_winkler(left, right)
            else:
                for left, right in values:
                    jaro_winkler(left, right)
            best[name] = min(best[name], time.perf_counter() - started)
    differences = threshold_differences(pairs)
    by_attribute: dict[str, int] = {}
    for item in differences:
        by_attribute[str(item["attribute"])] = by_attribute.get(str(item["attribute"]), 0) + 1
    report = {
        "pairs": len(pairs),
        "pairs_by_attribute": {a: sum(1 for p in pairs if p[0] == a) for a in sorted(FUZZY_ATTRIBUTES)},
        "microseconds_per_pair": {name: round(seconds / len(values) * 1e6, 3) for name, seconds in best.items()},
        "speed_up": round(best["hand_written"] / best["rapidfuzz"], 1),
        "threshold_differences": len(differences),
        "threshold_differences_by_attribute": by_attribute,
        "threshold_differences_with_odd_out_of_order_count": sum(1 for d in differences if d["out_of_order"] % 2),
        "newly_clear_a_threshold": sum(1 for d in differences if d["new"] > d["old"]),
        "name_differences": [d for d in differences if d["attribute"] in ("first_name", "last_name")],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
