"""opencode backend pieces: event parsing, paths, binary lookup, env, outcome checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orchestra_kit.agents.base import AgentRequest
from orchestra_kit.agents.opencode import (
    OpencodeBackend,
    _check_outcome,
    build_prompt,
    find_opencode,
)
from orchestra_kit.agents.opencode_events import OpencodeEventParser, relative_path
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentError, AgentUnavailableError, ProviderError

# Real lines printed by opencode 1.18.33 (trimmed ids) for a run that wrote hello.txt.
SAMPLE = [
    '{"type":"step_start","timestamp":1,"sessionID":"s","part":{"type":"step-start"}}',
    ('{"type":"tool_use","timestamp":2,"sessionID":"s","part":{"type":"tool","tool":"write",'
     '"callID":"c","state":{"status":"completed","input":{"filePath":"WS/hello.txt",'
     '"content":"hello world\\n"},"output":"Wrote file successfully.","metadata":'
     '{"filepath":"WS/hello.txt","exists":false}}}}'),
    ('{"type":"step_finish","timestamp":3,"sessionID":"s","part":{"reason":"tool-calls",'
     '"type":"step-finish","tokens":{"total":1536,"input":1533,"output":3}}}'),
    '{"type":"step_start","timestamp":4,"sessionID":"s","part":{"type":"step-start"}}',
    '{"type":"text","timestamp":5,"sessionID":"s","part":{"type":"text","text":"Wrote it."}}',
    ('{"type":"step_finish","timestamp":6,"sessionID":"s","part":{"reason":"stop",'
     '"tokens":{"total":1538,"input":1536,"output":2}}}'),
]
ERROR_LINE = ('{"type":"error","sessionID":"s","error":{"name":"APIError","data":'
              '{"message":"Invalid API key (fake)","statusCode":401,"isRetryable":false}}}')


def parse(tmp_path: Path, lines: list[str]) -> tuple[OpencodeEventParser, list[str]]:
    ws = tmp_path / "sessions" / "alice"
    ws.mkdir(parents=True)
    parser = OpencodeEventParser(workspace=ws, project_root=tmp_path)
    kinds = []
    for line in lines:
        kinds += [e.kind for e in parser.feed(line.replace("WS", str(ws)))]
    return parser, kinds


def test_parses_the_real_event_sample(tmp_path: Path) -> None:
    parser, kinds = parse(tmp_path, SAMPLE)
    assert kinds == ["progress", "file", "tokens", "progress", "text", "tokens"]
    assert parser.files_touched == ["sessions/alice/hello.txt"]
    assert parser.tokens_out == 5 and parser.texts == ["Wrote it."] and parser.steps == 2
    assert parser.error is None


def test_rejected_tool_calls_and_noise_are_ignored(tmp_path: Path) -> None:
    rejected = SAMPLE[1].replace('"completed"', '"error"')
    parser, kinds = parse(tmp_path, [rejected, "not json", "[1, 2]", '{"type":"weird"}', ""])
    assert kinds == [] and parser.files_touched == []
    assert list(parser.other_lines) == ["not json", "[1, 2]", '{"type":"weird"}']


def test_error_event_becomes_provider_error(tmp_path: Path) -> None:
    parser, _ = parse(tmp_path, [ERROR_LINE])
    assert parser.error_status() == 401
    with pytest.raises(ProviderError, match="Invalid API key") as info:
        _check_outcome(1, parser, "")
    assert info.value.status == 401 and not info.value.retryable


def test_outcome_checks(tmp_path: Path) -> None:
    parser, _ = parse(tmp_path, SAMPLE)
    _check_outcome(0, parser, "")  # success: no error
    with pytest.raises(ProviderError, match="Rate limit") as info:
        _check_outcome(1, parser, "Error: Rate limit exceeded")
    assert info.value.status == 429
    with pytest.raises(AgentError, match="exited with code 2; stderr tail: boom") as err:
        _check_outcome(2, parser, "boom")
    assert not isinstance(err.value, ProviderError)


@given(st.lists(st.text(alphabet="ab./", min_size=1, max_size=4), min_size=1, max_size=5))
@example(["..", "..a"]).via("found in CI: /proj/..a is the file '..a' inside the root")
@example(["..", "..", "x"])
def test_relative_path_never_escapes_silently(parts: list[str]) -> None:
    root = Path("/proj")
    rel = relative_path("/".join(parts), workspace=root / "ws", project_root=root)
    # Either a clean relative path inside the root, or an absolute one outside it
    # (a name such as "..a" is a file inside the root, not a step out of it).
    assert rel.startswith("/") or ".." not in rel.split("/")


def test_relative_path_examples(tmp_path: Path) -> None:
    ws = tmp_path / "sessions" / "a"
    assert relative_path("x/y.py", workspace=ws, project_root=tmp_path) == "sessions/a/x/y.py"
    assert relative_path(str(tmp_path / "src/m.py"), workspace=ws,
                         project_root=tmp_path) == "src/m.py"
    assert relative_path("/etc/passwd", workspace=ws, project_root=tmp_path) == "/etc/passwd"


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailableError, match="make opencode") as info:
        find_opencode(AgentSettings(opencode_bin=str(tmp_path / "nope")))
    assert "npm install --prefix .tools/opencode opencode-ai@1.18.33" in str(info.value)


def _fake_bin(tmp_path: Path) -> Path:
    binary = tmp_path / "opencode"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def test_argv_env_and_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    settings = AgentSettings(backend="opencode", base_url="http://127.0.0.1:1/v1",
                             opencode_bin=str(_fake_bin(tmp_path)))
    backend = OpencodeBackend(settings, state_dir=tmp_path / "state")
    request = AgentRequest(task_id=3, employee="alice", description="Fix the bug",
                           model="fake-smart", files=("src/a.py",), workspace=tmp_path)
    argv = backend.argv(request)
    # The prompt goes in on stdin: nothing of the task shows in `ps`.
    assert argv[1:] == ["run", "--pure", "--format", "json", "--model", "local/fake-smart"]
    prompt = build_prompt(request)
    assert "alice" in prompt and "Fix the bug" in prompt and "src/a.py" in prompt
    assert "current folder" in prompt
    env = backend.build_env(request, tmp_path / "state" / "alice")
    assert "SECRET_TOKEN" not in env
    assert env["PWD"] == str(tmp_path.resolve())
    assert env["XDG_DATA_HOME"] == str(tmp_path / "state" / "alice" / "data")
    for switch in ("MODELS_FETCH", "AUTOUPDATE", "LSP_DOWNLOAD", "SHARE"):
        assert env[f"OPENCODE_DISABLE_{switch}"] == "1"
    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    local = config["provider"]["local"]
    assert local["npm"] == "@ai-sdk/openai-compatible"
    assert local["options"] == {"baseURL": "http://127.0.0.1:1/v1", "apiKey": "sk-local"}
    assert set(local["models"]) == {"fake-model", "fake-smart"}


def test_needs_a_base_url(tmp_path: Path) -> None:
    settings = AgentSettings(backend="opencode", opencode_bin=str(_fake_bin(tmp_path)))
    with pytest.raises(AgentUnavailableError, match="base_url"):
        OpencodeBackend(settings, state_dir=tmp_path)


def test_parses_the_saved_sample_file(tmp_path: Path) -> None:
    sample = Path(__file__).parents[1] / "data" / "opencode_events_sample.jsonl"
    if not sample.exists():
        pytest.skip(f"{sample} not present")
    parser = OpencodeEventParser(workspace=tmp_path, project_root=Path("/"))
    kinds = [e.kind for line in sample.read_text().splitlines() for e in parser.feed(line)]
    assert kinds.count("file") == 1 and "progress" in kinds and "tokens" in kinds
    assert parser.files_touched[0].endswith(".txt") and parser.tokens_out > 0
    assert parser.error is None and not parser.other_lines


def test_provider_key_is_in_a_private_file_not_in_argv_or_environment(tmp_path: Path) -> None:
    settings = AgentSettings(backend="opencode", base_url="http://127.0.0.1:1/v1",
                             opencode_bin=str(_fake_bin(tmp_path)), api_key="sk-very-secret")
    backend = OpencodeBackend(settings, state_dir=tmp_path / "state")
    request = AgentRequest(task_id=3, employee="alice", description="x", model="m",
                           workspace=tmp_path)
    env = backend.build_env(request, tmp_path / "state" / "alice")
    assert not any("sk-very-secret" in part for part in [*env.values(), *backend.argv(request)])
    options = json.loads(env["OPENCODE_CONFIG_CONTENT"])["provider"]["local"]["options"]
    assert options["apiKey"] == f"{{file:{tmp_path / 'state' / 'provider-key'}}}"
