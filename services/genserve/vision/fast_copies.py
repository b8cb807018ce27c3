"""Frozen copies of served networks laid out for speed, made once per network and cached.

A copy is keyed weakly by the original module (it goes when the original goes) and by what it
was made for, built under a lock so concurrent first calls make one copy, and leaves the
original as it is.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

Network = TypeVar("Network", bound=nn.Module)

_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def channels_last_copy(network: Network, purpose: str, prepare: Callable[[Network], None] | None = None) -> Network:
    """A frozen (eval, no gradients) deep copy of `network`, `prepare`d in place, then channels_last.

    oneDNN runs NHWC convolutions faster on CPU, but fed NHWC activations and NCHW weights it
    reorders every weight on every call; weights stored channels_last are reordered once.
    """
    with _LOCK:
        per_network = _COPIES.setdefault(network, {})
        fast = per_network.get(purpose)
        if fast is None:
            fast = copy.deepcopy(network).eval().requires_grad_(False)
            if prepare is not None:
                prepare(fast)  # type: ignore[arg-type]
            fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            per_network[purpose] = fast
    return fast  # type: ignore[return-value]
