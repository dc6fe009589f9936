"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP
status that fits, and the mapping from the fleet's gRPC statuses to them.

The same object becomes a Realtime ``error`` event and a Wyoming ``error`` event, so every
surface reports a failure with the same words.
"""

from __future__ import annotations

from typing import Any

import grpc

from services.runtime.errors import field_violations

# gRPC status → (HTTP status, OpenAI error type). A refused request is the caller's fault
# (4xx); a service down or slow is ours (5xx), so SDKs retry those and not the others.
_STATUS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error"),
    grpc.StatusCode.CANCELLED: (503, "server_error"),
}


class ApiError(Exception):
    """A failure to report to the caller, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The ``error`` object (the HTTP body wraps it in ``{"error": ...}``)."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_grpc(err: grpc.aio.AioRpcError, service: str) -> ApiError:
    """The caller's view of a failed call to one of the fleet's services."""
    code = err.code()
    details = err.details() or code.name
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # The caller got past the gateway's own check: this is the gateway's credential for
        # the service being refused, a deployment error rather than the caller's.
        return ApiError(
            502,
            f"the {service} service refused the gateway's credentials ({details}); check the gateway's "
            f"GATEWAY_{service.upper()}__TOKEN",
            type="server_error",
            code="upstream_auth",
        )
    status, kind = _STATUS.get(code, (502, "server_error"))
    fields = field_violations(err)
    param = next(iter(fields), None)
    message = details if status < 500 else f"{service} service: {details}"
    return ApiError(status, message, type=kind, param=param, code=code.name.lower())
