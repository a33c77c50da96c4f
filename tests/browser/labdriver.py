"""Drive JupyterLab in Chromium the way a user does: open a notebook, Run All, click widgets.

A JupyterLab server on 127.0.0.1 (a free port, a token, a temporary root holding copies
of the notebooks and experiments, its settings and runtime files in that root too) and
Debian's Chromium driven by Playwright with ``executable_path`` (no browser download).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip

# JupyterLab user settings: no news or update checks (nothing leaves 127.0.0.1), every
# cell rendered (no windowing), no autosave (the copies stay as copied).
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its URL, token and root folder."""

    url: str
    token: str
    root: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/notebooks/{name}?token={self.token}"


def lay_out_root(root: Path) -> None:
    """Copy the notebooks and experiments into ``root`` and write the lab's settings."""
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "experiments", root / "experiments")
    (root / "results").mkdir()
    for rel, doc in _SETTINGS.items():
        path = root / ".jupyter" / "lab-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc), encoding="utf-8")


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    home = root / ".jupyter"
    env.update(JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               IPYTHONDIR=str(home / "ipython"), MPLBACKEND="module://matplotlib_inline.backend_inline")
    return env


def _wait_ready(url: str, token: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"JupyterLab did not answer on {url} within {timeout_s:g} s")


@contextmanager
def running_lab(root: Path, *, timeout_s: float = 90.0) -> Iterator[Lab]:
    """Start JupyterLab on 127.0.0.1 serving ``root``; stop it (and its kernels) after."""
    port, token = free_port(), os.urandom(12).hex()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (root / "jupyter.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, token, proc, timeout_s)
        yield Lab(url=url, token=token, root=root)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it and the kernels it started); SIGKILL if stuck."""
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # kernels left behind by a clean server exit
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------- notebook actions

CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    """Open a notebook from the file browser (loading JupyterLab once) and wait for its kernel."""
    if not page.url.startswith(lab.url):
        page.goto(f"{lab.url}/lab/tree/notebooks?reset&token={lab.token}")
    page.locator(".jp-DirListing-item", has_text=name).dblclick()
    page.wait_for_function(
        """name => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                   .some(e => e.textContent.trim() === name)""", arg=name, timeout=60_000)
    wait_kernel_idle(page)
    page.wait_for_selector(f"{CURRENT} .jp-Notebook .jp-CodeCell", timeout=60_000)


def shutdown_kernels(lab: Lab) -> None:
    """Shut down every session's kernel through the REST API (frees the CPU between tests)."""
    with urllib.request.urlopen(f"{lab.url}/api/sessions?token={lab.token}", timeout=10) as r:
        sessions = json.loads(r.read())
    for session in sessions:
        req = urllib.request.Request(f"{lab.url}/api/sessions/{session['id']}?token={lab.token}",
                                     method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


def wait_kernel_idle(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait until the status bar says the notebook's kernel is started and idle."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                 .some(e => /^Python 3.*\\| Idle$/.test(e.textContent.trim()))""",
        timeout=timeout_ms,
    )


def run_all(page: Any, timeout_ms: float = 120_000) -> None:
    """Run → Run All Cells from the menu bar, then wait until every code cell has run."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')];
            if (prompts.some(p => p.textContent.includes('*'))) return false;
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout_ms,
    )
    wait_kernel_idle(page, timeout_ms)


def cell_errors(page: Any) -> list[str]:
    """Texts of error outputs (tracebacks) in the open notebook."""
    texts = page.locator(f"{CURRENT} .jp-OutputArea-output"
                         "[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in texts if "Traceback" in t or "Error" in t]


def rendered_images(page: Any) -> int:
    """How many output images (charts) are loaded with a real size."""
    return int(page.evaluate(
        """sel => [...document.querySelectorAll(sel + ' .jp-OutputArea-output img')]
                 .filter(i => i.complete && i.naturalWidth > 100).length""", CURRENT))
