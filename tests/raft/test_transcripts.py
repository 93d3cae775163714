"""Golden transcripts in tests/raft/testdata/*.txt (MESHKIT_UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.raft.transcript import run_file

DATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    problems = run_file(path, update=os.environ.get("MESHKIT_UPDATE_GOLDEN") == "1")
    assert not problems, "\n\n".join(problems)
