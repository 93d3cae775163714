"""Raft messages to and from their wire form (meshkitpb.RaftMessage)."""

from __future__ import annotations

from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)


def encode(m: Message, out: rpb.RaftMessage) -> None:
    out.type = int(m.type)
    out.to = m.to
    out.frm = m.frm
    out.term = m.term
    out.log_term = m.log_term
    out.index = m.index
    out.commit = m.commit
    out.reject = m.reject
    out.reject_hint = m.reject_hint
    out.context = m.context
    add = out.entries.add
    for e in m.entries:
        add(term=e.term, index=e.index, type=int(e.type), data=e.data)
    if m.snapshot is not None:
        md = m.snapshot.metadata
        s = out.snapshot
        s.index = md.index
        s.term = md.term
        s.conf_state.voters.extend(md.conf_state.voters)
        s.conf_state.learners.extend(md.conf_state.learners)
        s.data = m.snapshot.data


def decode(p: rpb.RaftMessage) -> Message:
    snap = None
    if p.HasField("snapshot"):
        s = p.snapshot
        snap = Snapshot(
            SnapshotMetadata(
                index=s.index, term=s.term,
                conf_state=ConfState(voters=tuple(s.conf_state.voters),
                                     learners=tuple(s.conf_state.learners)),
            ),
            s.data,
        )
    return Message(
        type=MessageType(p.type),
        to=p.to,
        frm=p.frm,
        term=p.term,
        log_term=p.log_term,
        index=p.index,
        entries=tuple(Entry(e.term, e.index, EntryType(e.type), e.data) for e in p.entries),
        commit=p.commit,
        reject=p.reject,
        reject_hint=p.reject_hint,
        snapshot=snap,
        context=p.context,
    )
