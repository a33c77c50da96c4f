"""The throwaway PostgreSQL helper, `orchestra pg`, and the PostgreSQL settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags, Settings
from orchestra_kit.errors import ConfigError, StoreError
from orchestra_kit.scheduler.events import TaskEvent
from orchestra_kit.scheduler.shared import decode_event, encode_event
from orchestra_kit.server.cli import build_parser, settings_from_args
from orchestra_kit.store.pg import PgStore
from orchestra_kit.store.pg_schema import PG_MIGRATIONS
from orchestra_kit.store.pgserver import PgServer, find_pg_bindir, pg_system_user


async def test_session_server_is_usable_and_unprivileged(pg_server: PgServer) -> None:
    conn = await asyncpg.connect(pg_server.url)
    try:
        assert str(await conn.fetchval("SHOW listen_addresses")) == "127.0.0.1"
        assert (await conn.fetchval("SELECT 2 + 2")) == 4
    finally:
        await conn.close()
    owner = os.stat(pg_server.data_dir).st_uid
    user = pg_system_user()
    assert owner == (user.pw_uid if user is not None else os.geteuid())
    assert owner != 0  # initdb refuses root: the cluster is never root's
    assert (find_pg_bindir() / "initdb").is_file()


def test_cli_start_stop_keeps_folder(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "orchestra_kit", "pg"]
    if os.geteuid() == 0:  # pytest's folders are root's alone: the cluster's user is refused
        refused = subprocess.run([*cmd, "start", "--dir", str(tmp_path / "c")],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 1 and "not traversable" in refused.stderr
    parent = Path(tempfile.mkdtemp(prefix="orchestra-pgtest-"))
    parent.chmod(0o711)
    try:
        _start_stop(cmd, parent / "cluster", tmp_path)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _start_stop(cmd: list[str], d: Path, tmp_path: Path) -> None:
    started = subprocess.run([*cmd, "start", "--dir", str(d)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("postgresql://orchestra@127.0.0.1:")
    assert (d / "url").read_text().strip() == url
    stopped = subprocess.run([*cmd, "stop", "--dir", str(d)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert (d / "data" / "PG_VERSION").exists()  # kept: start again reuses it
    missing = subprocess.run([*cmd, "stop", "--dir", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "No PostgreSQL cluster" in missing.stderr
    pg = PgServer(base_dir=d)  # not kept: reuses the cluster, removes it on stop
    pg.start()
    assert (d / "data" / "postmaster.pid").exists()  # running on the kept data
    pg.stop()
    pg.stop()  # idempotent
    assert not d.exists()
    with pytest.raises(StoreError, match="after start"):
        _ = pg.url




def test_database_url_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"database\.url.*postgresql://"):
        Settings.load(environ={}, overrides={"database.url": "mysql://x"})
    with pytest.raises(ConfigError, match=r"instance_timeout_s"):
        Settings.load(environ={}, overrides={"database.heartbeat_interval_s": 5,
                                             "database.instance_timeout_s": 2})
    env = Settings.load(environ={"ORCHESTRA_DATABASE_URL": "postgresql://u@h:1/d"})
    assert env.database.url == "postgresql://u@h:1/d"


def test_serve_db_flag_picks_the_backend() -> None:
    pg = settings_from_args(build_parser().parse_args(["--db", "postgresql://u@h:5/d"]), {})
    assert pg.database.url == "postgresql://u@h:5/d"
    lite = settings_from_args(build_parser().parse_args(["--db", "x.db"]), {})
    assert (lite.database.url, lite.database.path) == ("", "x.db")


def test_events_round_trip_and_fit_a_notify_payload() -> None:
    ev = TaskEvent(7, "progress", "running", 40, {"text": "x" * 20_000, "tokens": 3}, 1.5)
    payload = encode_event("inst1", ev)
    assert len(payload.encode()) < 8000
    decoded = decode_event(payload)
    assert decoded is not None
    origin, back = decoded
    assert origin == "inst1"
    assert (back.task_id, back.kind, back.status, back.progress, back.data) == (
        7, "progress", "running", 40, {"tokens": 3})
    assert decode_event("not json") is None


async def test_instances_starting_at_once_migrate_once(pg_url: str, tmp_path: Path) -> None:
    settings = DatabaseSettings(url=pg_url, max_connections=2)
    stores = [PgStore(pg_url, settings, OptimizationFlags(), project_root=tmp_path)
              for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            versions = [r[0] for r in await conn.fetch(
                "SELECT version FROM orchestra_schema ORDER BY version")]
            alive = await conn.fetchval("SELECT COUNT(*) FROM instances")
        finally:
            await conn.close()
        assert versions == list(range(1, len(PG_MIGRATIONS) + 1))
        assert alive == 4
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))
