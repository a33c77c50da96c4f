"""The current_task.md format: render and parse round-trip, the original's rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.progress import CHECKBOXES, FileProgress, ProgressDoc, parse, render

ORIGINAL = """# Current Task: Add login

## Assigned: alice

## Files Needed:
- src/auth.py

## Progress:
- [x] Task started
- [x] Files locked
- [ ] Work in progress
- [ ] Work completed
- [ ] Files released

## File Status:
- src/auth.py: 40% complete (half way)
- src/db.py: 100% complete
- README.md: 10% complete (READY TO RELEASE)

## Current Work:
Writing the handler

## Next Steps:
Tests

## Notes:
none
"""


def test_parse_original_document() -> None:
    doc = parse(ORIGINAL)
    assert doc.task == "Add login"
    assert doc.assigned == "alice"
    assert [f.path for f in doc.files] == ["src/auth.py", "src/db.py", "README.md"]
    assert doc.checks == (True, True, False, False, False)
    assert doc.overall_progress == (40 + 100 + 10) // 3
    assert doc.ready_files == ("src/db.py", "README.md")
    assert doc.current_work == "Writing the handler"


_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="#()"),
                min_size=1, max_size=30).map(str.strip).filter(bool)


@given(
    task=_text,
    files=st.lists(st.tuples(_text.filter(lambda s: ":" not in s and not s.startswith("-")),
                             st.integers(0, 100), st.sampled_from(["", "note", "READY TO RELEASE"])),
                   max_size=5, unique_by=lambda t: t[0]),
    checks=st.tuples(*[st.booleans()] * len(CHECKBOXES)),
)
def test_round_trip(task: str, files: list[tuple[str, int, str]], checks: tuple[bool, ...]) -> None:
    doc = ProgressDoc(task=task, assigned="bob",
                      files=tuple(FileProgress(path=p, percent=n, note=note) for p, n, note in files),
                      checks=checks, current_work="w", next_steps="n", notes="x")
    assert parse(render(doc)) == doc
