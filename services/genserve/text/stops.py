"""Stop sequences on a growing completion, without ever streaming text a stop later removes."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, new_from: int, stops: Sequence[str]) -> int | None:
    """Start of the earliest stop sequence in `text` that overlaps text[new_from:], or None.

    Earlier text was already scanned, so only windows reaching into the new part are searched.
    """
    best: int | None = None
    for stop in stops:
        position = text.find(stop, max(0, new_from - len(stop) + 1))
        if position != -1 and (best is None or position < best):
            best = position
    return best


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop sequence.

    Those characters may yet become a stop sequence, so they are not released to the client.
    """
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
