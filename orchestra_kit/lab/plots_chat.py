"""Chart of the chat lab: ack, first reply and completion latency vs users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from orchestra_kit.lab.plot_common import COLORS, new_figure, plain_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_chat_latency"]

_SERIES = (("ack", "ack (HTTP answer to the event)"),
           ("first_reply", "first reply in thread"),
           ("completion", "completion message"))


def plot_chat_latency(points: pd.DataFrame | Sequence[Mapping[str, Any]]) -> Figure:
    """p50 (dotted) and p99 (solid) of each time vs users; Slack's 3 s ack limit dashed."""
    df = points if isinstance(points, pd.DataFrame) else pd.DataFrame(list(points))
    df = df.groupby("users", as_index=False).mean(numeric_only=True).sort_values("users")
    fig, ax = new_figure()
    for k, (name, label) in enumerate(_SERIES):
        for q, style in (("p50", ":"), ("p99", "-")):
            col = f"{name}_{q}_ms"
            if col in df.columns:
                ax.plot(df["users"], df[col], style, marker="o", color=COLORS[k],
                        label=f"{label}, {q}")
    ax.axhline(3000.0, color="grey", linestyle="--", linewidth=1, label="Slack's ack limit (3 s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax.xaxis)
    ax.set_xlabel("users posting mentions (closed loop)")
    ax.set_ylabel("ms from the mention being sent")
    ax.set_title("Chat: time to ack, to the first reply and to the completion message")
    ax.legend(fontsize="small")
    return fig
