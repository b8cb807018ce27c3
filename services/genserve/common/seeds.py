"""Seeds for requests that ask for none: random, and returned to the client so it can repeat the result."""

from __future__ import annotations

import os


def fresh_seed() -> int:
    """A random seed below 2^63, so that every client language's integer types hold it."""
    return int.from_bytes(os.urandom(8), "little") >> 1
