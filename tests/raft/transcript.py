"""A small script language for Raft scenarios with golden transcripts (etcd-raft style).

A file is a sequence of blocks::

    # comments and blank lines between blocks are kept
    <command> <args...>
    ----
    <expected output, one or more lines>

Run with MESHKIT_UPDATE_GOLDEN=1 to rewrite the expected outputs from the actual ones.
"""

from __future__ import annotations

from pathlib import Path

from meshkit.server.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDroppedError,
)
from tests.raft.harness import Cluster

SEP = "----"


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} {cc.type.name}({cc.node_id})"
    return f"{e.term}/{e.index} {e.data.decode(errors='replace')!r}"


def fmt_msg(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    t = m.type
    if t in (MessageType.MsgApp, MessageType.MsgVote, MessageType.MsgPreVote):
        parts.append(f"log={m.log_term}/{m.index}")
    if t == MessageType.MsgApp:
        parts.append(f"commit={m.commit}")
        if m.entries:
            parts.append("entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    if t == MessageType.MsgAppResp:
        parts.append(f"index={m.index}")
        if m.reject:
            parts.append(f"rejected hint={m.log_term}/{m.reject_hint}")
    if t in (MessageType.MsgVoteResp, MessageType.MsgPreVoteResp):
        parts.append("rejected" if m.reject else "granted")
    if t == MessageType.MsgHeartbeat:
        parts.append(f"commit={m.commit}")
    if t == MessageType.MsgSnap and m.snapshot is not None:
        md = m.snapshot.metadata
        parts.append(f"snapshot={md.term}/{md.index} voters={list(md.conf_state.voters)}")
    if t == MessageType.MsgReadIndexResp:
        parts.append(f"index={m.index}")
    if m.context:
        parts.append(f"ctx={m.context.decode(errors='replace')!r}")
    return " ".join(parts)


def _kv(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args:
        k, _, v = a.partition("=")
        out[k] = v
    return out


def _ids(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(",") if x)


class Interpreter:
    def __init__(self) -> None:
        self.c: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self.c is None:
            raise AssertionError("no cluster: start the script with `cluster voters=...`")
        return self.c

    def run(self, line: str) -> list[str]:
        cmd, *args = line.split()
        fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if fn is None:
            raise AssertionError(f"unknown command {cmd!r}")
        out = fn(args)
        return out or ["ok"]

    def cmd_cluster(self, args: list[str]) -> list[str]:
        kv = _kv(args)
        self.c = Cluster(
            voters=_ids(kv.get("voters", "1,2,3")),
            learners=_ids(kv.get("learners", "")),
            seed=int(kv.get("seed", "0")),
            pre_vote=kv.get("pre_vote", "true") == "true",
            check_quorum=kv.get("check_quorum", "true") == "true",
        )
        return []

    def cmd_campaign(self, args: list[str]) -> list[str]:
        self.cluster.campaign(int(args[0]))
        return []

    def cmd_propose(self, args: list[str]) -> list[str]:
        try:
            self.cluster.propose(int(args[0]), args[1].encode())
        except ProposalDroppedError as e:
            return [f"dropped: {e}"]
        return []

    def cmd_tick(self, args: list[str]) -> list[str]:
        self.cluster.tick(int(args[0]), int(args[1]) if len(args) > 1 else 1)
        return []

    def cmd_tick_all(self, args: list[str]) -> list[str]:
        self.cluster.tick_all(int(args[0]) if args else 1)
        return []

    def cmd_run(self, args: list[str]) -> list[str]:
        """Tick every node and deliver everything, N times (output omitted)."""
        self.cluster.run(int(args[0]))
        return []

    def cmd_stabilize(self, args: list[str]) -> list[str]:
        c = self.cluster
        out = []
        while c.network:
            m = c.network[0]
            cut = (m.frm, m.to) in c.cut or not c.nodes[m.to].alive
            out.append(("DROP " if cut else "") + fmt_msg(m))
            c.deliver_one(0)
        return out

    def cmd_isolate(self, args: list[str]) -> list[str]:
        self.cluster.isolate(int(args[0]))
        return []

    def cmd_heal(self, args: list[str]) -> list[str]:
        self.cluster.heal()
        return []

    def cmd_crash(self, args: list[str]) -> list[str]:
        self.cluster.crash(int(args[0]))
        return []

    def cmd_restart(self, args: list[str]) -> list[str]:
        self.cluster.restart(int(args[0]))
        return []

    def cmd_status(self, args: list[str]) -> list[str]:
        c = self.cluster
        out = []
        for nid in _ids(args[0]) if args else sorted(c.nodes):
            sn = c.nodes[nid]
            if not sn.alive:
                out.append(f"{nid}: down")
                continue
            n = sn.raft
            out.append(
                f"{nid}: {n.role.name} term={n.term} lead={n.lead} commit={n.commit_index} "
                f"applied={n.applied_index} last={n.last_index}"
            )
        return out

    def cmd_log(self, args: list[str]) -> list[str]:
        n = self.cluster.node(int(args[0]))
        lg = n.raft_log
        return [fmt_entry(e) for e in lg.slice(lg.first_index(), lg.last_index() + 1)] or ["empty"]

    def cmd_applied(self, args: list[str]) -> list[str]:
        sn = self.cluster.nodes[int(args[0])]
        return [", ".join(d.decode(errors="replace") for d in sn.applied_data) or "nothing"]

    def cmd_read_index(self, args: list[str]) -> list[str]:
        nid = int(args[0])
        try:
            self.cluster.node(nid).read_index(args[1].encode())
        except ProposalDroppedError as e:
            return [f"dropped: {e}"]
        self.cluster.process(nid)
        return []

    def cmd_read_states(self, args: list[str]) -> list[str]:
        sn = self.cluster.nodes[int(args[0])]
        out = [f"index={rs.index} ctx={rs.ctx.decode()!r}" for rs in sn.read_states]
        sn.read_states.clear()
        return out or ["none"]

    def cmd_transfer(self, args: list[str]) -> list[str]:
        nid, target = int(args[0]), int(args[1])
        self.cluster.node(nid).transfer_leadership(target)
        self.cluster.process(nid)
        return []

    def cmd_conf_change(self, args: list[str]) -> list[str]:
        nid = int(args[0])
        kinds = {
            "add": ConfChangeType.ADD_NODE,
            "add-learner": ConfChangeType.ADD_LEARNER_NODE,
            "remove": ConfChangeType.REMOVE_NODE,
        }
        kind, _, target = args[1].partition("=")
        c = self.cluster
        if int(target) not in c.nodes:
            c.add_empty_node(int(target))
        try:
            ok = c.node(nid).propose_conf_change(ConfChange(kinds[kind], int(target)))
        except ProposalDroppedError as e:
            return [f"dropped: {e}"]
        c.process(nid)
        return [] if ok else ["refused: another conf change is pending"]

    def cmd_conf(self, args: list[str]) -> list[str]:
        cs = self.cluster.node(int(args[0])).conf_state()
        return [f"voters={list(cs.voters)} learners={list(cs.learners)}"]

    def cmd_compact(self, args: list[str]) -> list[str]:
        c = self.cluster
        nid = int(args[0])
        n = c.node(nid)
        snap = n.compact(n.applied_index, str(c.nodes[nid].sm_digest).encode())
        return [f"snapshot at {snap.metadata.term}/{snap.metadata.index}"]


def parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Blocks as (leading comment/blank lines, command, expected output lines)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    pre: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            pre.append(line)
            i += 1
            continue
        cmd = line
        if i + 1 >= len(lines) or lines[i + 1] != SEP:
            raise AssertionError(f"line {i + 2}: expected {SEP!r} after command {cmd!r}")
        i += 2
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append((pre, cmd, out))
        pre = []
    return blocks


def run_file(path: Path, update: bool) -> list[str]:
    """Run a script; returns mismatch descriptions (or rewrites the file when ``update``)."""
    blocks = parse(path.read_text())
    it = Interpreter()
    problems = []
    rendered: list[str] = []
    for pre, cmd, expected in blocks:
        actual = it.run(cmd)
        if actual != expected:
            problems.append(
                f"{path.name}: {cmd}\n--- expected\n"
                + "\n".join(expected)
                + "\n--- actual\n"
                + "\n".join(actual)
            )
        rendered.extend(pre)
        rendered.extend([cmd, SEP, *actual])
    if update:
        path.write_text("\n".join(rendered) + "\n")
        return []
    return problems
