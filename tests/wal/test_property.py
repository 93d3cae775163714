"""Property: after any mix of save/sync/reopen/crash, replay is a prefix of what was saved
that contains everything synced (with Raft's overwrite semantics applied)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshkit.server.raft.types import Entry, EntryType, HardState
from meshkit.server.wal import WAL, Replay
from tests.wal.util import segment_prefix_size, segments

Rec = tuple[str, object]  # ("e", Entry) or ("h", HardState)


def apply(stream: list[Rec]) -> tuple[list[Entry], HardState]:
    out: list[Entry] = []
    hs = HardState()
    for kind, v in stream:
        if kind == "h":
            assert isinstance(v, HardState)
            hs = v
            continue
        assert isinstance(v, Entry)
        if out and v.index <= out[-1].index:
            del out[v.index - out[0].index :]
        out.append(v)
    return out, hs


save_op = st.tuples(
    st.just("save"),
    st.integers(0, 6),  # entries in the batch
    st.integers(0, 3),  # how far back a new leader overwrites
    st.integers(0, 80),  # data size
    st.booleans(),  # with a hard state
)
ops = st.lists(
    st.one_of(
        save_op,
        save_op,
        st.tuples(st.just("sync")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash"), st.floats(0, 1)),
    ),
    max_size=25,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=ops, segment_bytes=st.sampled_from([150, 400, 2000, 1 << 20]))
def test_replay_is_synced_prefix(ops: list[tuple], segment_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as td:
        d = Path(td) / "wal"
        wal = WAL.create(d, b"m", segment_bytes=segment_bytes)
        stream: list[Rec] = []
        synced_k = 0
        synced_at = (segments(d)[-1], segments(d)[-1].stat().st_size)
        term = 1
        counter = 0

        def check(replay: Replay, lo: int) -> None:
            got = (replay.entries, replay.hard_state)
            assert any(apply(stream[:k]) == got for k in range(lo, len(stream) + 1)), (
                got,
                stream,
                lo,
            )

        for op in ops:
            if op[0] == "save":
                _, n, back, size, with_hs = op
                cur, _ = apply(stream)
                back = min(back, len(cur) - 1) if cur else 0
                if back > 0:
                    term += 1
                start = cur[-1].index + 1 - back if cur else 1
                batch = []
                for i in range(start, start + n):
                    counter += 1
                    data = os.urandom(size)
                    et = EntryType.CONF_CHANGE if counter % 5 == 0 else EntryType.NORMAL
                    batch.append(Entry(term, i, et, data))
                hs = HardState(term, counter % 3, max(0, start - 1)) if with_hs else None
                wal.save(hs, batch)
                stream += [("e", e) for e in batch]
                if hs is not None:
                    stream.append(("h", hs))
            elif op[0] == "sync":
                wal.sync()
                synced_k = len(stream)
                tail = segments(d)[-1]
                synced_at = (tail, tail.stat().st_size)
            elif op[0] == "reopen":
                wal.close()
                wal, replay = WAL.open(d, segment_bytes=segment_bytes)
                assert replay.truncated_bytes == 0
                check(replay, len(stream))
                stream = [("e", e) for e in replay.entries] + [("h", replay.hard_state)]
                synced_k = len(stream)
                tail = segments(d)[-1]
                synced_at = (tail, tail.stat().st_size)
            else:
                # Power loss: the unsynced part of the last segment is cut anywhere.
                wal.close()
                tail = segments(d)[-1]
                size = tail.stat().st_size
                lo = (
                    synced_at[1] if synced_at[0] == tail else segment_prefix_size(tail.read_bytes())
                )
                cut = lo + int((size - lo) * op[1])
                os.truncate(tail, cut)
                wal, replay = WAL.open(d, segment_bytes=segment_bytes)
                assert replay.truncated_bytes >= 0
                check(replay, synced_k)
                stream = [("e", e) for e in replay.entries] + [("h", replay.hard_state)]
                synced_k = len(stream)
                synced_at = (tail, tail.stat().st_size)
        wal.close()
        _, replay = WAL.open(d)
        check(replay, len(stream))
        _.close()
