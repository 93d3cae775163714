"""Printers against output captured from the real etcdctl 3.4.23 (no server needed)."""

from __future__ import annotations

import io

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.ctl.gofmt import duration, human_bytes, quote
from meshkit.ctl.printer import EpStatus, Printer

# `etcdctl member list -w table` against a real etcd 3.4.23
MEMBER_TABLE = """\
+------------------+---------+---------+-----------------------+------------------------+------------+
|        ID        | STATUS  |  NAME   |      PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+---------+-----------------------+------------------------+------------+
| 8e9e05c52164694d | started | default | http://localhost:2380 | http://127.0.0.1:23791 |      false |
+------------------+---------+---------+-----------------------+------------------------+------------+
"""

STATUS_TABLE = """\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:23791 | 8e9e05c52164694d |   3.4.0 |   16 kB |      true |      false |         2 |         13 |                 13 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
"""


def _printer(fmt: str) -> tuple[Printer, io.BytesIO]:
    buf = io.BytesIO()
    return Printer(fmt, out=buf, err=io.BytesIO()), buf


def test_member_list_table_matches_etcdctl() -> None:
    p, buf = _printer("table")
    mid = 0x8E9E05C52164694D
    p.member_list(rpc_pb2.MemberListResponse(members=[rpc_pb2.Member(
        ID=mid, name="default", peerURLs=["http://localhost:2380"], clientURLs=["http://127.0.0.1:23791"])]))
    assert buf.getvalue().decode() == MEMBER_TABLE


def test_endpoint_status_table_matches_etcdctl() -> None:
    p, buf = _printer("table")
    mid = 0x8E9E05C52164694D
    resp = rpc_pb2.StatusResponse(header=rpc_pb2.ResponseHeader(member_id=mid), version="3.4.0",
                                  dbSize=16384, leader=mid, raftIndex=13, raftTerm=2, raftAppliedIndex=13)
    p.endpoint_status([EpStatus("127.0.0.1:23791", resp)])
    assert buf.getvalue().decode() == STATUS_TABLE


def test_go_renderings() -> None:
    assert quote(b'a"\n\x00\xff\xe2\x82\xac') == '"a\\"\\n\\x00\\xff€"'
    assert duration(0.001668355) == "1.668355ms"
    assert duration(2.5) == "2.5s"
    assert duration(0.0000012) == "1.2µs"
    assert human_bytes(16384) == "16 kB"
    assert human_bytes(1_234_567) == "1.2 MB"
    assert human_bytes(5) == "5 B"
