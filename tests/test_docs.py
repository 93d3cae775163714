"""docs/compat.md must only cite tests that exist (so its claims stay checkable)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_cited_test_exists() -> None:
    text = (ROOT / "docs" / "compat.md").read_text()
    cited = set(re.findall(r"`(tests/[\w/]+(?:\.py)?)(?:::(\w+))?[`\[]", text))
    assert cited, "compat.md cites no tests"
    missing = []
    for path, name in sorted(cited):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif name and target.is_file() and name.isidentifier() and name.upper() != name:
            if not re.search(rf"^(async )?def {name}\b", target.read_text(), re.M):
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/compat.md cites tests that do not exist: {missing}"
