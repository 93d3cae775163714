"""Lease TTLs for the pages (etcd has no watch for a lease's countdown: read on change
and every few seconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from meshkit._internal.errors import MeshkitError
from meshkit.client import Client

__all__ = ["lease_ttls"]


async def lease_ttls(client: Client, leases: Iterable[int], *, concurrency: int = 16,
                     ) -> dict[str, int | None]:
    """``{lease id in hex: seconds left}``; -1 for a lease that is gone, None when the
    user may not read it or the call failed."""
    ids = sorted({lease for lease in leases if lease})
    sem = asyncio.Semaphore(concurrency)

    async def one(lease: int) -> tuple[str, int | None]:
        async with sem:
            try:
                return f"{lease:x}", (await client.time_to_live(lease)).ttl
            except MeshkitError:
                return f"{lease:x}", None

    return dict(await asyncio.gather(*(one(i) for i in ids)))
