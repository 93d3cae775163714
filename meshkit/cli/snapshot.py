"""``meshkit snapshot save|status|restore``: etcdctl 3.4's snapshot commands.

The same implementation as ``meshkit ctl snapshot ...`` (``meshkit/ctl/cmd_snapshot.py``),
with etcdctl's flags, messages and exit codes:

* ``meshkit snapshot save FILE --endpoints=HOST:PORT`` streams a snapshot from a
  meshkit or etcd member;
* ``meshkit snapshot status FILE [-w simple|table|json|fields]``;
* ``meshkit snapshot restore FILE --data-dir DIR --name N --initial-cluster ...``
  turns an etcd (or meshkit) snapshot into a meshkit data dir: start
  ``meshkit server`` on it with the same ``--name``/``--initial-cluster``/
  ``--initial-cluster-token`` and it serves the snapshot's keys and revisions
  (the migration path from etcd to meshkit; docs/snapshot.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

USAGE = """\
Usage:

  meshkit snapshot save <filename> [--endpoints=HOST:PORT] [etcdctl's global flags]
  meshkit snapshot status <filename> [-w simple|table|json|fields]
  meshkit snapshot restore <filename> [--data-dir DIR] [--wal-dir DIR] [--name NAME]
      [--initial-cluster NAME=URL,...] [--initial-cluster-token TOKEN]
      [--initial-advertise-peer-urls URLS] [--skip-hash-check]

The same commands as `meshkit ctl snapshot ...` (etcdctl 3.4's flags, messages and
exit codes). `restore` writes a meshkit data dir: start `meshkit server` on it with
the same --name, --initial-cluster and --initial-cluster-token.
Run 'meshkit snapshot <command> --help' for a command's flags.
"""


def main(argv: Sequence[str] | None = None) -> int:
    from meshkit.ctl.app import main as ctl_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(USAGE)
        return 2
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    return ctl_main(["snapshot", *args])


if __name__ == "__main__":
    sys.exit(main())
