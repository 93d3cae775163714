"""Member and cluster ids derived exactly as etcd derives them, so the same
flags give the same ids on meshkit and etcd (handy for side-by-side tests)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable


def member_id(peer_urls: Iterable[str], cluster_token: str) -> int:
    # etcd: sha1(sorted peer URLs joined + token), first 8 bytes big-endian.
    material = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    return int(struct.unpack(">Q", hashlib.sha1(material).digest()[:8])[0])


def cluster_id(member_ids: Iterable[int]) -> int:
    ids = sorted(member_ids)
    material = b"".join(struct.pack(">Q", i) for i in ids)
    return int(struct.unpack(">Q", hashlib.sha1(material).digest()[:8])[0])
