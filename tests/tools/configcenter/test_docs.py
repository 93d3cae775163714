"""docs/configcenter.md: its cited tests exist and its etcdctl commands are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

from meshkit.configcenter import format_commands, role_commands

DOC = Path(__file__).resolve().parents[3] / "docs" / "configcenter.md"


def test_cited_tests_exist() -> None:
    text = DOC.read_text()
    cited = re.findall(r"`((?:tests/tools/configcenter/)?(test_\w+\.py))::(\w+)`", text)
    assert len(cited) >= 8
    here = Path(__file__).parent
    for _full, file, name in cited:
        src = (here / file).read_text()
        assert re.search(rf"^(async )?def {name}\b", src, re.M), f"{file}::{name}"


def test_documented_role_commands_are_what_the_code_prints() -> None:
    block = DOC.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    expected = format_commands(role_commands("prod/payments", readers=["payments-app"],
                                             writers=["alice"]))
    assert block == expected
