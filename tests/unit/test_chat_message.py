"""Chat text: mentions, intent, paths, limits, replies; and message text stays data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.agents.base import AgentRequest
from orchestra_kit.agents.opencode import OpencodeBackend
from orchestra_kit.chat import Intent, SenderLimits, classify, find_paths, parse_mentions
from orchestra_kit.chat.message import IncomingMessage, strip_mentions
from orchestra_kit.chat.replies import completion_text, escape
from orchestra_kit.config import AgentSettings
from orchestra_kit.models import NAME_PATTERN, Task, TaskStatus

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)


def test_mentions_keep_whole_names_and_strip_the_bot_suffix() -> None:
    text = "hi @alice and @dev-2-bot, cc a@b.com <@U123> and @alice again"
    assert parse_mentions(text) == ["alice", "dev-2"]  # the original cut @dev-2 to "dev"
    assert strip_mentions("<@U1> @alice please fix it") == "please fix it"


@given(NAMES, st.text(alphabet=" ,.!?:;\n", max_size=3))
def test_any_employee_name_is_found_after_an_at_sign(name: str, tail: str) -> None:
    found = parse_mentions(f"<@UAPP> @{name}{tail} do it")
    expected = name[:-4] if name.lower().endswith("-bot") and len(name) > 4 else name
    assert found == [expected]
    assert re.fullmatch(NAME_PATTERN, found[0])


@given(st.text(max_size=200))
def test_parsers_never_fail_and_mentions_are_valid_names(text: str) -> None:
    assert all(re.fullmatch(NAME_PATTERN, n) for n in parse_mentions(text))
    assert isinstance(find_paths(text), list) and classify(text) in set(Intent)


@pytest.mark.parametrize(("text", "intent"), [
    ("", Intent.HELP), ("help", Intent.HELP), ("what can you do?", Intent.HELP),
    ("status?", Intent.STATUS), ("how is it going", Intent.STATUS),
    ("please add a status endpoint", Intent.TASK), ("status of the build?", Intent.STATUS),
    ("help me fix the login bug", Intent.TASK), ("fix src/app.py", Intent.TASK),
])
def test_intent(text: str, intent: Intent) -> None:
    assert classify(text) is intent


def test_paths_are_found_and_links_are_not() -> None:
    text = ("fix `src/app.py`, README.md and ../etc/passwd (see <https://x.io/a.py>) "
            "and docs/ — version 1.2 is out. /abs/path.txt")
    assert find_paths(text) == ["src/app.py", "README.md", "../etc/passwd", "docs/",
                                "/abs/path.txt"]


def test_message_identity() -> None:
    msg = IncomingMessage(channel="C1", user="U1", text="x", ts="1.2")
    assert (msg.reply_thread, msg.message_key, msg.dedup_id) == ("1.2", "C1:1.2", "msg:C1:1.2")
    reply = IncomingMessage(channel="C1", user="U1", text="x", ts="1.3", thread_ts="1.2",
                            event_id="Ev1")
    assert (reply.reply_thread, reply.dedup_id) == ("1.2", "Ev1")


def test_limits_interval_and_hourly_window_with_a_fake_clock() -> None:
    now = [1000.0]
    limits = SenderLimits(3, 2.0, clock=lambda: now[0])
    assert limits.check("u").allowed
    no = limits.check("u")
    assert not no.allowed and no.retry_after_s == pytest.approx(2.0) and "2 s" in no.reason
    assert limits.check("v").allowed  # per sender
    for _ in range(2):
        now[0] += 2.0
        assert limits.check("u").allowed
    now[0] += 2.0
    hourly = limits.check("u")
    assert not hourly.allowed and "3 messages an hour" in hourly.reason
    assert hourly.retry_after_s == pytest.approx(3600 - 6.0)
    now[0] += 3600
    assert limits.check("u").allowed


def test_zero_turns_limits_off() -> None:
    limits = SenderLimits(0, 0.0, clock=lambda: 0.0)
    assert all(limits.check("u").allowed for _ in range(1000))


def test_replies_escape_user_text() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    task = Task(id=7, employee="alice", description="d", status=TaskStatus.COMPLETED,
                result="did <!here> it")
    text = completion_text(task, ["b.py", "a.py", "a.py"])
    assert text == "Task 7 for alice completed: did &lt;!here&gt; it\nFiles touched: a.py, b.py"


def test_message_text_reaches_opencode_as_one_argv_element(tmp_path: Path) -> None:
    binary = tmp_path / "opencode"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    backend = OpencodeBackend(AgentSettings(backend="opencode", opencode_bin=str(binary),
                                            base_url="http://127.0.0.1:1/v1"),
                              state_dir=tmp_path / "state")
    hostile = '--model evil/x"; rm -rf / $(reboot) `id` --help'
    plain = AgentRequest(task_id=1, employee="alice", description="fix it", model="m")
    argv = backend.argv(AgentRequest(task_id=1, employee="alice", description=hostile,
                                     model="m"))
    assert len(argv) == len(backend.argv(plain)) and argv[:-1] == backend.argv(plain)[:-1]
    assert hostile in argv[-1] and not argv[-1].startswith("-")
