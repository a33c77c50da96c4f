"""A throwaway PostgreSQL cluster for tests, the lab and trying scale-out on one machine.

``PgServer`` finds Debian's PostgreSQL binaries (``/usr/lib/postgresql/*/bin``; the
Makefile's ``setup`` installs the ``postgresql`` package when they are missing), runs
``initdb -A trust --no-sync`` in a temporary folder, starts ``postgres`` with
``pg_ctl -w`` on a free 127.0.0.1 port and a private socket folder, and on close stops
it and removes the folder::

    with PgServer() as pg:                 # or: async with PgServer() as pg
        url = pg.url                       # postgresql://orchestra@127.0.0.1:PORT/postgres

``initdb`` refuses to run as root, so as root the cluster belongs to an unprivileged
system user: ``postgres`` when it exists, else ``orchestra-pg`` (created with
``useradd --system`` when missing). As any other user it runs as that user.

``fsync=off`` by default (like SQLite's ``synchronous=NORMAL``: a commit survives the
crash of any process, not a power cut); ``PgServer(fsync=True)`` for the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from ..errors import StoreError

__all__ = ["PgServer", "find_pg_bindir", "free_port", "pg_system_user"]

PG_USER_NAMES = ("postgres", "orchestra-pg")
DB_USER = "orchestra"
DB_NAME = "postgres"  # initdb makes it; a createdb would cost ~1 s more


def find_pg_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first).

    ``ORCHESTRA_PG_BINDIR`` wins; then ``/usr/lib/postgresql/*/bin``; then ``pg_ctl`` on
    the PATH (resolved through symlinks)."""
    env = os.environ.get("ORCHESTRA_PG_BINDIR")
    candidates = [Path(env)] if env else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted((p for p in root.iterdir() if p.name.split(".")[0].isdigit()),
                          key=lambda p: float(p.name) if p.name.replace(".", "").isdigit() else 0,
                          reverse=True)
        candidates += [v / "bin" for v in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for c in candidates:
        if all((c / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return c
    raise StoreError("PostgreSQL server binaries not found (looked in ORCHESTRA_PG_BINDIR,"
                     " /usr/lib/postgresql/*/bin, PATH): run `make setup`, which installs"
                     " the Debian package `postgresql`")


def pg_system_user() -> pwd.struct_passwd | None:
    """The unprivileged user that owns clusters when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in PG_USER_NAMES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    PG_USER_NAMES[-1]], check=True, capture_output=True)
    return pwd.getpwnam(PG_USER_NAMES[-1])


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks; a race is retried by start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throwaway cluster; a (sync or async) context manager with idempotent close."""

    def __init__(self, *, base_dir: str | Path | None = None, fsync: bool = False,
                 max_connections: int = 300, keep: bool = False) -> None:
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self.fsync = fsync
        self.max_connections = max_connections
        self.keep = keep  # leave the folder (for `orchestra pg start --dir`)
        self.port = 0
        self.root: Path | None = None
        self._user = pg_system_user()
        self._bindir = find_pg_bindir()
        self._running = False

    @property
    def url(self) -> str:
        """The database URL (superuser ``orchestra``, trust auth, loopback only)."""
        if not self._running:
            raise StoreError("PgServer.url is known only after start()")
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder."""
        if self.root is None:
            raise StoreError("PgServer has no folder before start()")
        return self.root / "data"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        try:
            return subprocess.run([str(self._bindir / argv[0]), *argv[1:]], check=check,
                                  capture_output=True, text=True, cwd=self.root, timeout=60,
                                  **kw)
        except subprocess.CalledProcessError as e:
            raise StoreError(f"{argv[0]} failed ({e.returncode}): {e.stderr.strip()[-800:]}"
                             ) from None

    def _make_root(self) -> Path:
        if self._base_dir is not None:
            self._base_dir.mkdir(parents=True, exist_ok=True)
            root = self._base_dir.resolve()
            self._check_reachable(root)
        else:
            root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
        (root / "sock").mkdir(exist_ok=True)
        if self._user is not None:
            for p in (root, root / "sock"):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
        return root

    def _check_reachable(self, root: Path) -> None:
        """The cluster's user must be able to walk down to ``root`` (as root, it is not root)."""
        if self._user is None:
            return
        for parent in root.parents:
            st = parent.stat()
            if st.st_uid != self._user.pw_uid and not st.st_mode & 0o001:
                raise StoreError(f"{root} is not reachable by user {self._user.pw_name!r}"
                                 f" (who runs PostgreSQL): {parent} is not traversable; choose"
                                 f" a folder whose parents are (e.g. under /var/tmp)")

    def start(self) -> None:
        """initdb (unless the folder holds a cluster), then start on a free port."""
        if self._running:
            raise StoreError("PgServer.start() called twice")
        self.root = self._make_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", DB_USER,
                      "--no-sync", "-E", "UTF8", "--locale=C")
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            try:
                self._pg_ctl_start()
            except StoreError as e:
                last = e
                continue
            self._running = True
            return
        self._remove()
        raise StoreError(f"PostgreSQL did not start: {last}")

    def _pg_ctl_start(self) -> None:
        assert self.root is not None
        opts = (f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1"
                f" -c max_connections={self.max_connections} -c fsync={'on' if self.fsync else 'off'}"
                " -c full_page_writes=off -c deadlock_timeout=50ms -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "postgres.log"),
                  "-o", opts, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder unless ``keep`` (idempotent)."""
        if self._running:
            self._running = False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
                      check=False)
        if not self.keep:
            self._remove()

    def stop_dir(self) -> None:
        """Stop a cluster left running in ``base_dir`` by an earlier ``start`` (keeps it)."""
        if self._base_dir is None or not (self._base_dir / "data" / "PG_VERSION").exists():
            raise StoreError(f"No PostgreSQL cluster in {self._base_dir}")
        self.root = self._base_dir
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def _remove(self) -> None:
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    async def aclose(self) -> None:
        """Async :meth:`stop`."""
        await asyncio.to_thread(self.stop)
