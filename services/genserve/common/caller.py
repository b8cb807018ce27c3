"""Who is calling: the principal a gateway authenticated, carried to backends in one header.

The gateway sets `current_principal` for each call it admits and forwards it to backends as
`x-genserve-principal`; a backend reads it back with `principal_of`. Calls that reach a backend
without the header (tests, a backend called directly) belong to `ANONYMOUS`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

ANONYMOUS = "anonymous"
PRINCIPAL_HEADER = "x-genserve-principal"

# The principal of the call being handled in this task (set by the gateway's interceptor).
current_principal: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default=ANONYMOUS)


def principal_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The principal a gateway forwarded in `metadata` (a call's invocation metadata), else ANONYMOUS."""
    for key, value in metadata or ():
        if key == PRINCIPAL_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ANONYMOUS


def forwarded_principal() -> tuple[tuple[str, str]]:
    """The metadata a gateway adds to a backend call: the current call's principal."""
    return ((PRINCIPAL_HEADER, current_principal.get()),)
