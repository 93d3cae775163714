"""A writer process killed with SIGKILL mid-load loses no acknowledged entry."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meshkit.server.wal import WAL

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from meshkit.server.raft.types import Entry, HardState
    from meshkit.server.wal import WAL

    d, batch = Path(sys.argv[1]), int(sys.argv[2])
    wal = WAL.create(d, b"child", segment_bytes=1 << 16)
    n = 0
    while True:
        es = [Entry(1, i, data=(b"%d;" % i) * 40) for i in range(n + 1, n + batch + 1)]
        wal.save(HardState(1, 1, n), es)
        wal.sync()
        n += batch
        print(n, flush=True)  # acknowledged: durable from here on
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 17, 250])
def test_sigkill_keeps_acknowledged_entries(tmp_path: Path, batch: int) -> None:
    d = tmp_path / "wal"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked = 0
    target = max(300, batch * 20)
    while acked < target:
        line = proc.stdout.readline()
        assert line, f"child exited early with {proc.wait()}"
        acked = int(line)
    time.sleep(random.uniform(0, 0.02))
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    for line in rest.split():
        acked = int(line)

    wal, replay = WAL.open(d)
    wal.close()
    assert replay.metadata == b"child"
    got = replay.entries
    assert len(got) >= acked
    assert [e.index for e in got] == list(range(1, len(got) + 1))
    for e in got:
        assert e.data == (b"%d;" % e.index) * 40
    assert replay.hard_state.commit >= acked - batch
