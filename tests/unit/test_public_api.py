"""The package's public API and layout: what notebooks and users import stays put."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import orchestra_kit
import orchestra_kit.lab

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestra_kit"
LINE_LIMIT = 420  # "~400 lines" in STYLE.md; longer modules need a reason in architecture.md


@pytest.mark.parametrize("module", [orchestra_kit, orchestra_kit.lab], ids=lambda m: m.__name__)
def test_every_exported_name_resolves(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    missing = [n for n in names if getattr(module, n, None) is None]
    assert not missing


def test_the_names_a_user_needs_are_public() -> None:
    from orchestra_kit import OrchestraClient, OrchestraError, Service, Settings  # noqa: F401
    from orchestra_kit.lab import TuningPanel, load_run, run_experiment  # noqa: F401

    assert issubclass(orchestra_kit.ConfigError, OrchestraError)
    assert re.match(r"\d+\.\d+", orchestra_kit.__version__)


def test_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        orchestra_kit.lab.no_such_thing  # noqa: B018


def test_notebooks_import_only_public_names() -> None:
    deep = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for module in re.findall(r"(?:from|import)\s+(orchestra_kit[\w.]*)", source):
                if module not in ("orchestra_kit", "orchestra_kit.lab"):
                    deep.append(f"{path.name}: {module}")
    assert not deep, f"notebooks reach into internal modules: {deep}"


def test_no_loose_component_files_at_the_top_level() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py")
             if re.match(r"(fakellm_.*|fakellm|scheduler_.*|scheduler|taskqueue)\.py$", p.name)]
    assert not loose


def test_long_modules_are_explained_in_architecture_md() -> None:
    explained = (ROOT / "docs" / "architecture.md").read_text()
    long_ = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
             if len(p.read_text().splitlines()) > LINE_LIMIT]
    unexplained = [p for p in long_ if f"`{p}`" not in explained]
    assert not unexplained, f"modules over {LINE_LIMIT} lines without a reason in docs: {unexplained}"


def test_python_dash_m_works_like_the_script() -> None:
    out = subprocess.run([sys.executable, "-m", "orchestra_kit", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "fake-llm" in out.stdout and "serve" in out.stdout


def test_public_functions_are_not_shadowed_by_submodules() -> None:
    import orchestra_kit.lab.analysis
    from orchestra_kit.lab import compare

    assert callable(compare) and not isinstance(compare, type(orchestra_kit))
    clashes = [n for n in orchestra_kit.lab.__all__
               if (PACKAGE / "lab" / f"{n}.py").exists()]
    assert not clashes, f"public names that are also submodules: {clashes}"
