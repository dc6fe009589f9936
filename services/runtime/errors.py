"""Domain errors and their gRPC status codes.

Engines and servicers raise these; the server's error interceptor turns them into a gRPC
status with a message a person can act on (and ``google.rpc.BadRequest`` details for field
errors). Anything else that escapes a handler is a bug: it becomes INTERNAL and is logged.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class ServiceError(Exception):
    """Base of the errors a client should see, with the status code that fits."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self, message: str, *, fields: Mapping[str, str] | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        self.retry_after = retry_after
        """Seconds after which a retry should succeed: sent as ``google.rpc.RetryInfo``."""

    def to_status(self) -> grpc.Status:
        """The rich status: code, message and field violations."""
        status = status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message)
        if self.fields:
            details = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.fields.items()
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(details)
            status.details.append(packed)
        if self.retry_after is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(round(self.retry_after * 1000))
            packed = any_pb2.Any()
            packed.Pack(retry)
            status.details.append(packed)
        return rpc_status.to_status(status)


class InvalidArgument(ServiceError):
    """The request itself is wrong (bad field value, unusable audio)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServiceError):
    """The request came in the wrong order (audio before config)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(ServiceError):
    """A named thing (voice, session, model) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ServiceError):
    """Loading, or a dependency is down: retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    """A queue or size limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError):
    """The work took longer than allowed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def field_violations(err: grpc.aio.AioRpcError | grpc.RpcError) -> dict[str, str]:
    """Client side: the BadRequest field violations carried by a failed call, if any."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out: dict[str, str] = {}
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def retry_delay(err: grpc.aio.AioRpcError | grpc.RpcError) -> float | None:
    """Client side: the seconds to wait before retrying, when the failed call says (RetryInfo)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToMilliseconds() / 1000)
    return None
