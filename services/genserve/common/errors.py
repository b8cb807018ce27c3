"""The one error table: each domain error carries its gRPC status code and a helpful message.

Domain code raises these; the server interceptor (common/interceptors.py) turns them into
statuses. Anything else becomes INTERNAL "internal error" with the traceback in the log, so a
client never sees a stack trace. Messages say what was wrong and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import grpc


class GenserveError(Exception):
    """Base of every error a client may see."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(GenserveError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GenserveError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(GenserveError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GenserveError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(GenserveError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GenserveError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(GenserveError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GenserveError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(GenserveError):
    code = grpc.StatusCode.CANCELLED


class RemoteError(GenserveError):
    """A status from another genserve service, passed on with its own code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


ALL_ERRORS: tuple[type[GenserveError], ...] = (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
)


# --- validation helpers: one wording for every range check --------------------------------


T = TypeVar("T")


def loaded(value: T | None, what: str) -> T:
    """`value` once the role's start made it (models, the domain layer); until then UNAVAILABLE."""
    if value is None:
        raise Unavailable(f"{what} are still loading; retry shortly")
    return value


def require_finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, got {value}")
    return value


def require_range(
    field: str,
    value: float,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check low ≤ value ≤ high (or strict at an open end); NaN always fails."""
    require_finite(field, value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InvalidArgument(f"{field} must be in {interval}, got {value:g}")
    return value


def require_choice(field: str, value: str, allowed: Iterable[str]) -> str:
    options = sorted(allowed)
    if value not in options:
        raise InvalidArgument(f"{field} {value!r} is not one of: {', '.join(options)}")
    return value


def require_int(field: str, value: object, low: int, high: int) -> int:
    """An integer (not a bool, not a float) with low ≤ value ≤ high."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be in [{low}, {high}], got {value}")
    return value


def require_number(field: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite int or float (not a bool) in [low, high], or (low, high] with low_open; returned as float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{field} must be a number, got {value!r}")
    return require_range(field, float(value), low, high, low_open=low_open)
