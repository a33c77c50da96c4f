"""Shared helpers for the HTTP API tests: settings for a fresh in-process service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra_kit.config import Settings

API_KEY = "test-key-0123456789"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a service on 127.0.0.1:0 with a fresh database under ``tmp_path``."""
    base: dict[str, Any] = {
        "database.path": str(tmp_path / "orchestra.db"),
        "project_root": str(tmp_path),
        "server.host": "127.0.0.1",
        "server.port": 0,
        "server.requests_per_minute": 0,
        "agents.sim_latency_ms": 5,
        "agents.sim_jitter_ms": 0,
        "scheduler.max_api_requests_per_minute": 1_000_000,
        "scheduler.api_burst": 10_000,
        "scheduler.retry_backoff_s": 0,
    }
    base.update(overrides)
    return Settings.load(environ={}, overrides=base)
