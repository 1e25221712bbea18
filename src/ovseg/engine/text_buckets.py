"""Length buckets for the text encoder: sorted texts, each bucket padded only to its own longest.

A pass padded to its longest text spends most of its encoder FLOPs on padding when captions are short
with a long tail (CC12M: ~20 tokens on average, up to 77). Sorting by length and cutting the sorted list
into a few buckets keeps nearly all of the saving of per-text passes while keeping the batches large.
The attention mask already keeps padding out of the real tokens' outputs, so a real token's features
are the same in any bucket, up to float rounding.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def plan_buckets(lengths: Sequence[int], buckets: int) -> list[int]:
    """Where to cut the ascending order of ``lengths`` into at most ``buckets`` buckets: each bucket's end
    (exclusive), chosen so that the padded token count Σ size × longest is least.

    Only cuts between different lengths matter, so the search runs over the distinct lengths (at most
    ``max_length`` of them): exact and cheap, O(buckets × distinct²). Splitting a bucket never costs
    tokens, so the best plan uses min(buckets, distinct lengths) buckets.
    """
    ordered = sorted(lengths)
    values = sorted(set(ordered))
    ends = [bisect_right(ordered, v) for v in values]  # row count up to and including each distinct length
    m, k = len(values), max(1, min(buckets, len(values)))
    cost = [ends[j] * values[j] for j in range(m)]  # one bucket over the first j+1 distinct lengths
    starts: list[list[int]] = []  # starts[b][j]: first distinct length of the last bucket, with b+2 buckets
    for b in range(1, k):
        new, start = [float("inf")] * m, [0] * m
        for j in range(b, m):
            for i in range(b, j + 1):
                c = cost[i - 1] + (ends[j] - ends[i - 1]) * values[j]
                if c < new[j]:
                    new[j], start[j] = c, i
        cost, starts = new, [*starts, start]
    cut, j = [], m - 1
    for start in reversed(starts):
        cut.append(ends[j])
        j = start[j] - 1
    cut.append(ends[j])
    return cut[::-1]


def padded_tokens(lengths: Sequence[int], buckets: int) -> int:
    """Token positions the encoder processes: buckets > 0 as planned, 0 as one pass padded to the longest."""
    if not lengths:
        return 0
    if buckets <= 0:
        return len(lengths) * max(lengths)
    ordered, start, total = sorted(lengths), 0, 0
    for end in plan_buckets(ordered, buckets):
        total += (end - start) * ordered[end - 1]
        start = end
    return total
