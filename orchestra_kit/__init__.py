"""orchestra_kit: run a team of AI coding agents, and measure how far the setup scales.

The public API of the core (the lab's is :mod:`orchestra_kit.lab`)::

    from orchestra_kit import Service, Settings, OrchestraClient

    async with Service(Settings()) as service:          # the HTTP API on 127.0.0.1
        async with OrchestraClient(service.url) as client:
            await client.hire("alice", "developer")

Names are imported on first use, so importing the package stays cheap. The errors are
one tree rooted at :class:`OrchestraError`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from .errors import (
    AgentError,
    AgentTimeoutError,
    AgentUnavailableError,
    ApiError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OrchestraError,
    ProviderError,
    RateLimitedError,
    ServiceUnavailableError,
    StoreClosedError,
    StoreError,
    ValidationError,
)

if TYPE_CHECKING:
    from orchestra_kit.client import OrchestraClient
    from orchestra_kit.config import (
        AgentSettings,
        ChatSettings,
        DatabaseSettings,
        OptimizationFlags,
        SchedulerSettings,
        ServerSettings,
        Settings,
    )
    from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig
    from orchestra_kit.fakeslack import FakeSlack
    from orchestra_kit.models import Employee, FileLease, FileRequest, Task, TaskStatus
    from orchestra_kit.scheduler import Scheduler, TaskEvent
    from orchestra_kit.server.app import Service, create_app
    from orchestra_kit.store import Store

__all__ = [
    "AgentError",
    "AgentSettings",
    "AgentTimeoutError",
    "AgentUnavailableError",
    "ApiError",
    "ChatSettings",
    "ConfigError",
    "ConflictError",
    "DatabaseSettings",
    "Employee",
    "FakeLLM",
    "FakeLLMConfig",
    "FakeSlack",
    "FileLease",
    "FileRequest",
    "ForbiddenError",
    "NotFoundError",
    "OptimizationFlags",
    "OrchestraClient",
    "OrchestraError",
    "ProviderError",
    "RateLimitedError",
    "Scheduler",
    "SchedulerSettings",
    "ServerSettings",
    "Service",
    "ServiceUnavailableError",
    "Settings",
    "Store",
    "StoreClosedError",
    "StoreError",
    "Task",
    "TaskEvent",
    "TaskStatus",
    "ValidationError",
    "__version__",
    "create_app",
]

try:
    __version__ = version("orchestra_kit")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_WHERE = {
    "AgentSettings": "orchestra_kit.config",
    "ChatSettings": "orchestra_kit.config",
    "DatabaseSettings": "orchestra_kit.config",
    "Employee": "orchestra_kit.models",
    "FakeLLM": "orchestra_kit.fakellm",
    "FakeLLMConfig": "orchestra_kit.fakellm",
    "FakeSlack": "orchestra_kit.fakeslack",
    "FileLease": "orchestra_kit.models",
    "FileRequest": "orchestra_kit.models",
    "OptimizationFlags": "orchestra_kit.config",
    "OrchestraClient": "orchestra_kit.client",
    "Scheduler": "orchestra_kit.scheduler",
    "SchedulerSettings": "orchestra_kit.config",
    "ServerSettings": "orchestra_kit.config",
    "Service": "orchestra_kit.server.app",
    "Settings": "orchestra_kit.config",
    "Store": "orchestra_kit.store",
    "Task": "orchestra_kit.models",
    "TaskEvent": "orchestra_kit.scheduler",
    "TaskStatus": "orchestra_kit.models",
    "create_app": "orchestra_kit.server.app",
}
__getattr__ = lazy_getattr(__name__, _WHERE)
