"""The client's exceptions: one base class carrying the gRPC status name and the server's message.

Callers catch these instead of `grpc.RpcError`. Checks the client makes itself before sending
(an unknown optimizer name, an unreadable image path) raise `InvalidArgument` too, so one
`except` covers a bad request whichever side found it.
"""

from __future__ import annotations

import grpc


class GenserveClientError(Exception):
    """A failed call: `code` is the gRPC status name ("NOT_FOUND"), `message` the server's words."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(GenserveClientError, ValueError):
    """The request broke a documented limit (INVALID_ARGUMENT, OUT_OF_RANGE) or a client-side check."""

    code = "INVALID_ARGUMENT"


class NotFound(GenserveClientError):
    """No such model, job or concept (or it belongs to another API key)."""

    code = "NOT_FOUND"


class AlreadyExists(GenserveClientError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(GenserveClientError):
    """The call does not fit the object's state, e.g. the result of a job that has not succeeded."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(GenserveClientError):
    """A queue, a concurrency limit or a size cap is full: retry later or ask for less."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(GenserveClientError):
    """The API key is missing or wrong."""

    code = "UNAUTHENTICATED"


class PermissionDenied(GenserveClientError):
    code = "PERMISSION_DENIED"


class DeadlineExceeded(GenserveClientError):
    """The call's deadline (the client's `timeout`) passed before the answer came."""

    code = "DEADLINE_EXCEEDED"


class Unavailable(GenserveClientError):
    """The gateway or a backend cannot be reached (after the retries that were safe to make)."""

    code = "UNAVAILABLE"


class Cancelled(GenserveClientError):
    code = "CANCELLED"


class Internal(GenserveClientError):
    """A server-side fault (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED)."""

    code = "INTERNAL"


_BY_STATUS: dict[grpc.StatusCode, type[GenserveClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
    grpc.StatusCode.UNIMPLEMENTED: Internal,
}


def status_of(error: grpc.RpcError) -> grpc.StatusCode:
    """The status of a failed call (sync or asyncio); UNKNOWN when the error carries none."""
    code = getattr(error, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def error_from(error: grpc.RpcError) -> GenserveClientError:
    """A `grpc.RpcError` → the client's exception for its status, keeping the exact status name."""
    status = status_of(error)
    details = getattr(error, "details", None)
    message = (details() if callable(details) else None) or str(error)
    return _BY_STATUS.get(status, GenserveClientError)(message, code=status.name)
