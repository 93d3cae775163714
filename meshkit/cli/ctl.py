"""``meshkit ctl``: etcdctl v3's commands, flags, output formats and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from meshkit.ctl.app import main as _main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
