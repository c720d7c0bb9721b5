"""Errors the gateway answers with, as OpenAI-style bodies.

`GatewayError` carries everything a response needs (status, message, type, param, code,
Retry-After) and the bounded `reason` label of enova_gateway_rejections_total. Raised by the
request path (server, proxy, admission, generate); turned into a response in one place
(server's error middleware). Pure: no HTTP library here.
"""

from __future__ import annotations

import json
from typing import Any

# The only values the `reason` label of enova_gateway_rejections_total takes.
REASONS = ("invalid_request", "unknown_model", "body_too_large", "method_not_allowed", "not_found",
           "unauthorized", "queue_full", "queue_timeout", "no_ready_replica", "hold_timeout", "upstream_unreachable",
           "upstream_timeout", "internal_error")


class GatewayError(Exception):
    """A request the gateway answers itself, without (or after failing to reach) a replica."""

    def __init__(self, status: int, message: str, *, reason: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        assert reason in REASONS, reason
        self.status = status
        self.message = message
        self.reason = reason
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """{"error": {"message", "type", "param", "code"}}, the shape OpenAI clients parse."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, reason="invalid_request", param=param, code=code)


def unknown_model(name: str, known: list[str], param: str = "model") -> GatewayError:
    served = ", ".join(known) if known else "none"
    return GatewayError(404, f"the model `{name}` does not exist; served models: {served}",
                        reason="unknown_model", param=param, code="model_not_found")


def body_too_large(limit: int, got: int | None = None) -> GatewayError:
    size = f" ({got} bytes)" if got is not None else ""
    return GatewayError(413, f"the request body is larger than the gateway's limit of {limit} bytes{size}",
                        reason="body_too_large", code="body_too_large")


def method_not_allowed(method: str, path: str, allowed: list[str]) -> GatewayError:
    return GatewayError(405, f"method {method} is not allowed on {path}; use {', '.join(sorted(allowed))}",
                        reason="method_not_allowed", code="method_not_allowed")


def not_found(path: str) -> GatewayError:
    return GatewayError(404, f"no such endpoint: {path}", reason="not_found", code="not_found")


def unauthorized(detail: str) -> GatewayError:
    return GatewayError(401, f"{detail}: send 'Authorization: Bearer <token>'", reason="unauthorized",
                        code="invalid_api_key")


def queue_full(deployment: str, size: int, retry_after: int) -> GatewayError:
    return GatewayError(429, f"deployment {deployment} is at capacity and its queue of {size} waiting "
                        "requests is full; retry later", reason="queue_full", type="rate_limit_error",
                        code="queue_full", retry_after=retry_after)


def queue_timeout(deployment: str, waited: float, retry_after: int) -> GatewayError:
    return GatewayError(429, f"deployment {deployment} is at capacity; no replica became free within "
                        f"{waited:g} s; retry later", reason="queue_timeout", type="rate_limit_error",
                        code="queue_timeout", retry_after=retry_after)


def no_ready_replica(deployment: str, retry_after: int) -> GatewayError:
    return GatewayError(503, f"deployment {deployment} has no ready replica; retry later",
                        reason="no_ready_replica", type="service_unavailable_error",
                        code="no_ready_replica", retry_after=retry_after)


def hold_timeout(deployment: str, waited: float, retry_after: int) -> GatewayError:
    return GatewayError(503, f"deployment {deployment} has no ready replica: the request was held "
                        f"{round(waited, 1):g} s while one started (scale from zero) and none became ready; "
                        "retry later",
                        reason="hold_timeout", type="service_unavailable_error", code="hold_timeout",
                        retry_after=retry_after)


def upstream_unreachable(deployment: str, detail: str, retry_after: int) -> GatewayError:
    return GatewayError(502, f"deployment {deployment}: could not reach a replica ({detail})",
                        reason="upstream_unreachable", type="upstream_error", code="upstream_unreachable",
                        retry_after=retry_after)


def upstream_timeout(deployment: str, replica: str) -> GatewayError:
    return GatewayError(504, f"deployment {deployment}: replica {replica} did not answer in time",
                        reason="upstream_timeout", type="upstream_error", code="upstream_timeout")
