"""The OpenAI-compatible fake LLM provider: a server with a seeded latency model, faults
and scripted replies (see :mod:`orchestra_kit.fakellm.server`), and ``orchestra fake-llm``.

Modules, in dependency order: ``config`` (settings, scripted replies) → ``protocol`` (the
wire format) → ``state`` (queueing, faults, the request log) → ``server`` (the aiohttp
app) → ``cli``.
"""

from .cli import cli_main
from .config import FakeLLMConfig, ScriptedReply, scripts_from_json, write_file_script
from .server import FakeLLM, make_app
from .state import FakeLLMStats, RequestLogEntry

__all__ = [
    "FakeLLM",
    "FakeLLMConfig",
    "FakeLLMStats",
    "RequestLogEntry",
    "ScriptedReply",
    "cli_main",
    "make_app",
    "scripts_from_json",
    "write_file_script",
]
