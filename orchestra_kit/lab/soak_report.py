"""The soak's figures and files (``results/NAME/RUN_ID/``).

Files: ``requests.csv`` (one row per request: t_s, op, status, error, latency_ms),
``restarts.csv`` (killed_s, recovered_s, recovery_s, failed_requests, budget_share),
``rss.csv`` (t_s, life, rss_mb), ``summary.json`` (the figures below) and
``manifest.json`` (spec, git sha, versions, machine).

Figures: **availability** = requests answered 2xx or 4xx (the documented client errors)
over all requests; connection errors, timeouts and 5xx (503 while starting) are the
failures. **Error budget per restart**: the failures inside each restart's window (from
the kill to one second after recovery) as a share of the budget a 99.9 % availability
target allows for the whole run. **Recovery**: kill → first healthy ``/health``.
**Writes lost**: acknowledged hires and tasks absent afterwards (must be 0). **Stuck**:
tasks neither terminal nor ended within the settle time (must be 0). **RSS**: the
service's resident memory, per process life, first and last sample.
"""

from __future__ import annotations

import csv
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .soak import SoakRecorder
from .soak_spec import SoakSpec

__all__ = ["TARGET_AVAILABILITY", "new_run_dir", "soak_text", "summarise", "write_results"]

TARGET_AVAILABILITY = 0.999
#: Seconds after a recovery still charged to its restart.
RECOVERY_TAIL_S = 1.0


def new_run_dir(root: Path, name: str) -> Path:
    """``root/name/RUN_ID`` (UTC stamp + random suffix), created."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / name / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path


def _failed(status: int, error: str) -> bool:
    return bool(error) or status == 0 or status >= 500


def _restart_rows(rec: SoakRecorder, budget: float) -> list[dict[str, float]]:
    rows = []
    for r in rec.restarts:
        end = r["recovered_s"] + RECOVERY_TAIL_S
        failed = sum(1 for t, _, st, err, _ in rec.requests
                     if r["killed_s"] <= t <= end and _failed(st, err))
        rows.append({**{k: round(v, 3) for k, v in r.items()}, "failed_requests": failed,
                     "budget_share": round(failed / budget, 4) if budget else 0.0})
    return rows


def _rss_lives(rec: SoakRecorder) -> list[dict[str, float]]:
    lives: dict[int, list[tuple[float, float]]] = {}
    for t, life, mb in rec.rss:
        lives.setdefault(life, []).append((t, mb))
    return [{"life": life, "first_mb": round(s[0][1], 1), "last_mb": round(s[-1][1], 1),
             "peak_mb": round(max(mb for _, mb in s), 1),
             "seconds": round(s[-1][0] - s[0][0], 1)} for life, s in sorted(lives.items())]


def summarise(spec: SoakSpec, rec: SoakRecorder, verify: dict[str, Any]) -> dict[str, Any]:
    """The soak's figures (see the module docstring)."""
    total = len(rec.requests)
    failed = sum(1 for _, _, st, err, _ in rec.requests if _failed(st, err))
    client_4xx = sum(1 for _, _, st, err, _ in rec.requests if not err and 400 <= st < 500)
    budget = total * (1 - TARGET_AVAILABILITY)
    restarts = _restart_rows(rec, budget)
    recovery = [r["recovery_s"] for r in restarts]
    by_op: dict[str, dict[str, int]] = {}
    for _, op, st, err, _ in rec.requests:
        slot = by_op.setdefault(op, {"total": 0, "failed": 0})
        slot["total"] += 1
        slot["failed"] += _failed(st, err)
    rss = rec.rss
    return {
        "duration_s": spec.duration_s, "restart_every_s": spec.restart_every_s,
        "users": spec.users, "requests": total, "failed": failed, "answered_4xx": client_4xx,
        "availability": round((total - failed) / total, 6) if total else None,
        "availability_target": TARGET_AVAILABILITY,
        "error_budget_requests": round(budget, 2),
        "restarts": len(restarts),
        "recovery_s_mean": round(sum(recovery) / len(recovery), 3) if recovery else None,
        "recovery_s_max": round(max(recovery), 3) if recovery else None,
        "budget_share_per_restart_mean": (round(sum(r["budget_share"] for r in restarts)
                                                / len(restarts), 4) if restarts else None),
        "by_op": by_op,
        "rss_mb_start": round(rss[0][2], 1) if rss else None,
        "rss_mb_end": round(rss[-1][2], 1) if rss else None,
        "rss_lives": _rss_lives(rec),
        **verify,
    }


def _write_csv(path: Path, header: list[str], rows: list[Any]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_results(run_dir: Path, spec: SoakSpec, rec: SoakRecorder,
                  verify: dict[str, Any]) -> dict[str, Any]:
    """Write the run's files; returns the summary."""
    from .results import environment

    summary = summarise(spec, rec, verify)
    _write_csv(run_dir / "requests.csv", ["t_s", "op", "status", "error", "latency_ms"],
               [(round(t, 4), op, st, err, round(lat * 1000, 3))
                for t, op, st, err, lat in rec.requests])
    budget = summary["error_budget_requests"]
    rows = _restart_rows(rec, budget)
    _write_csv(run_dir / "restarts.csv",
               ["killed_s", "recovered_s", "recovery_s", "failed_requests", "budget_share"],
               [[r[k] for k in ("killed_s", "recovered_s", "recovery_s", "failed_requests",
                                "budget_share")] for r in rows])
    _write_csv(run_dir / "rss.csv", ["t_s", "life", "rss_mb"],
               [(round(t, 2), life, round(mb, 2)) for t, life, mb in rec.rss])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    manifest = {"name": spec.name, "run_id": run_dir.name, "kind": "soak",
                "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
                **environment()}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return summary


def soak_text(summary: dict[str, Any], run_dir: Path) -> str:
    """A short report in words and figures."""
    s = summary
    lines = [
        (f"soak: {s['requests']} requests in {s['duration_s']:g} s, {s['restarts']} SIGKILL "
        f"restarts ({s['users']} users)"),
        (f"  availability {s['availability']:.4%} (2xx or 4xx; target "
        f"{s['availability_target']:.1%}); failed {s['failed']}, budget "
        f"{s['error_budget_requests']:g} requests"),
        (f"  recovery (kill -> healthy): mean {s['recovery_s_mean']} s, max "
        f"{s['recovery_s_max']} s; budget spent per restart (mean) "
        f"{s['budget_share_per_restart_mean']}"),
        (f"  acknowledged writes lost: {s['lost_hires_count']} of {s['acked_hires']} hires, "
        f"{s['lost_tasks_count']} of {s['acked_tasks']} tasks; stuck tasks: "
        f"{s['stuck_tasks']} {s['task_statuses']}"),
        f"  service RSS: {s['rss_mb_start']} MB at start, {s['rss_mb_end']} MB at end; per "
        f"life (first -> last): " + ", ".join(
            f"{r['first_mb']}->{r['last_mb']}" for r in s["rss_lives"]),
        f"  files: {run_dir}",
    ]
    return "\n".join(lines)
