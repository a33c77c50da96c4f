"""The exception tree of orchestra_kit.

Every error the package raises on purpose derives from :class:`OrchestraError` and,
where one fits, from the matching builtin, so callers can catch either::

    OrchestraError
    ├── ConfigError (ValueError)          a bad Settings value, named key + value + allowed
    ├── ValidationError (ValueError)      bad input: names the field and the problem
    ├── NotFoundError (LookupError)       an employee, task or request that does not exist
    ├── ConflictError                     a duplicate, a held lease, an illegal state move
    │   ├── CapacityError                 no free slot (all instances) or employee busy
    │   └── LeaseBlockedError             a task's files are leased by someone else
    ├── ForbiddenError (PermissionError)  an actor may not do this (approve another's lease)
    ├── RateLimitedError                  a token bucket said no; carries retry_after_s
    ├── StoreError                        the database failed (not the caller's fault)
    │   └── StoreClosedError              used after aclose()
    ├── AgentError                        an agent backend failed to run a task
    │   ├── AgentUnavailableError         the backend cannot run at all (binary missing, ...)
    │   ├── AgentTimeoutError (TimeoutError)
    │   └── ProviderError                 the LLM provider answered an error; carries status
    ├── ServiceUnavailableError           starting or draining
    └── ApiError                          an HTTP error received by the client; carries status

Each error has a stable ``code`` (used as the JSON error code over HTTP) and an
``http_status``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "AgentUnavailableError",
    "ApiError",
    "CapacityError",
    "ConfigError",
    "ConflictError",
    "ForbiddenError",
    "LeaseBlockedError",
    "NotFoundError",
    "OrchestraError",
    "ProviderError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "StoreClosedError",
    "StoreError",
    "ValidationError",
]


class OrchestraError(Exception):
    """Root of every error raised by orchestra_kit."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the HTTP error body."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


class ConfigError(OrchestraError, ValueError):
    """A configuration value is invalid; the message names key, value and what is allowed."""

    code = "config_error"
    http_status = 500

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"Invalid setting {key}={value!r}: {allowed}", details={"key": key})
        self.key = key
        self.value = value
        self.allowed = allowed


class ValidationError(OrchestraError, ValueError):
    """Input that breaks a rule; ``field`` names where (``tasks[3].priority``)."""

    code = "validation_error"
    http_status = 422

    def __init__(self, field: str, problem: str, *, value: Any = None) -> None:
        super().__init__(f"{field}: {problem}", details={"field": field})
        self.field = field
        self.problem = problem
        self.value = value


class NotFoundError(OrchestraError, LookupError):
    """The named thing does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(OrchestraError):
    """The request conflicts with current state (duplicate, held lease, illegal move)."""

    code = "conflict"
    http_status = 409


class CapacityError(ConflictError):
    """A task may not start: the global running limit is reached (retry later)."""

    code = "capacity"


class LeaseBlockedError(ConflictError):
    """A task may not start yet: files it needs are leased by another employee."""

    code = "lease_blocked"


class ForbiddenError(OrchestraError, PermissionError):
    """The caller is known but may not do this (only a lease's owner approves a request)."""

    code = "forbidden"
    http_status = 403


class RateLimitedError(OrchestraError):
    """A rate limit refused the call; retry after ``retry_after_s`` seconds."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class StoreError(OrchestraError):
    """The database failed for a reason that is not the caller's input."""

    code = "store_error"
    http_status = 503


class StoreClosedError(StoreError):
    """The store was used after ``aclose()``."""

    code = "store_closed"


class AgentError(OrchestraError):
    """An agent backend could not complete a task."""

    code = "agent_error"
    http_status = 502
    retryable: bool = False


class AgentUnavailableError(AgentError):
    """The backend cannot run at all (missing binary, bad configuration)."""

    code = "agent_unavailable"
    http_status = 503


class AgentTimeoutError(AgentError, TimeoutError):
    """A task or a provider call ran past its timeout."""

    code = "agent_timeout"
    http_status = 504
    retryable = True


class ProviderError(AgentError):
    """The LLM provider answered with an error status."""

    code = "provider_error"

    def __init__(
        self, message: str, *, status: int, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, details={"status": status})
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = status == 429 or status >= 500


class ServiceUnavailableError(OrchestraError):
    """The service is starting or draining."""

    code = "unavailable"
    http_status = 503


class ApiError(OrchestraError):
    """An error answer from the HTTP API, as seen by :mod:`orchestra_kit.client`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}", details=details)
        self.http_status = status
        self.code = code
        self.request_id = request_id
        self.retry_after_s = retry_after_s
