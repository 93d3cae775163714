"""``AppConfig``: an application's live view of its config.

    async with AppConfig("prod/payments/api", endpoints=["127.0.0.1:2379"],
                         cache_file="/var/cache/api.config.json") as cfg:
        settings = cfg.data                      # the current document, a dict
        cfg.on_change(reload)                    # called for every new version, in order
        async for version in cfg.changes():      # or iterate the new versions
            ...

How it keeps up (the listener never stops silently):

* On entry it reads the published version. If the cluster cannot be reached, it
  starts from the cache file (the last version it saw, written after every change)
  and keeps trying in the background; when the cluster answers it catches up.
* It watches ``<app>/@current`` from the revision after the one it read. The
  client's watch resumes by itself after a failure; a watch that hits compaction
  (or any other error) makes it re-read the current version, deliver it if it is
  new, and watch again from there. Every failure is logged; retries back off up to
  ``retry_max`` seconds and go on until the object is closed.
* Versions are delivered in revision order, each once; a version is only skipped
  when compaction removed it before it could be watched (the re-read then delivers
  the newest one).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from meshkit._internal.errors import EtcdError
from meshkit.client import Client, ClientError, EventType, KeyValue, WatchCompactedError
from meshkit.configcenter.errors import (
    ConfigCenterError,
    ConfigNotFoundError,
    ConfigUnavailableError,
)
from meshkit.configcenter.names import DEFAULT_PREFIX, ConfigName
from meshkit.configcenter.records import ConfigVersion
from meshkit.configcenter.store import ConfigStore

__all__ = ["AppConfig", "Callback", "ChangeStream", "load_cache", "save_cache"]

log = logging.getLogger("meshkit.configcenter")

Callback = Callable[[ConfigVersion], Awaitable[None] | None]
Source = Literal["cluster", "cache"]
CACHE_KIND = "meshkit.config.cache/v1"


def save_cache(path: Path, cv: ConfigVersion) -> None:
    """Write the cache file atomically (temp file, fsync, rename)."""
    body = json.dumps({"kind": CACHE_KIND, "name": cv.name, "revision": cv.revision,
                       "record": cv.to_record()}, ensure_ascii=False, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_cache(path: Path, name: str) -> ConfigVersion | None:
    """The cached version of ``name``, or None (missing, unreadable or another config's)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("config %s: ignoring unreadable cache file %s: %s", name, path, e)
        return None
    if not isinstance(raw, dict) or raw.get("kind") != CACHE_KIND or raw.get("name") != name:
        log.warning("config %s: ignoring cache file %s: not a cache of this config", name, path)
        return None
    try:
        return ConfigVersion.from_record(raw.get("record"), int(raw["revision"]), str(path))
    except (ConfigCenterError, KeyError, TypeError, ValueError) as e:
        log.warning("config %s: ignoring broken cache file %s: %s", name, path, e)
        return None


class ChangeStream:
    """An async iterator of new versions (and an async context manager that unsubscribes).

    It receives every version delivered after it was created (plus the version current at
    that moment when asked), and ends when the ``AppConfig`` closes.
    """

    def __init__(self, owner: AppConfig) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[ConfigVersion | None] = asyncio.Queue()
        self._ended = False

    def _put(self, item: ConfigVersion | None) -> None:
        if not self._ended:
            self._queue.put_nowait(item)
            if item is None:
                self._ended = True

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> ConfigVersion:
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe; iteration ends after what is already queued."""
        self._owner._streams.discard(self)
        self._put(None)


class AppConfig:
    """The live config of one app: ``async with AppConfig(name, endpoints=...) as cfg``.

    Give ``client=`` to share a client (it stays open), or ``endpoints=`` (plus
    ``user``/``password`` for etcd auth) to let the object own one. With ``require``
    (the default) entering raises ``ConfigUnavailableError`` when neither the cluster
    nor the cache file has a version, ``ConfigNotFoundError`` when the cluster answers
    that none is published; with ``require=False`` it starts empty and waits.
    """

    def __init__(
        self,
        name: str | ConfigName,
        *,
        client: Client | None = None,
        endpoints: str | Sequence[str] = ("127.0.0.1:2379",),
        user: str | None = None,
        password: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        cache_file: str | Path | None = None,
        require: bool = True,
        connect_timeout: float = 3.0,
        retry_max: float = 2.0,
    ) -> None:
        if connect_timeout <= 0 or retry_max <= 0:
            raise ValueError("connect_timeout and retry_max must be positive")
        self._own_client = client is None
        self._client = client if client is not None else Client(
            endpoints, user=user, password=password, timeout=connect_timeout)
        self._store = ConfigStore(self._client, prefix=prefix)
        self.name = self._store.name(name)
        self._cache = Path(cache_file) if cache_file is not None else None
        self._require = require
        self._connect_timeout = connect_timeout
        self._retry_max = retry_max
        self._current: ConfigVersion | None = None
        self._processed: ConfigVersion | None = None  # the last version fully delivered
        self._source: Source | None = None
        self._next_revision = 0
        self._streams: set[ChangeStream] = set()
        self._callbacks: list[Callback] = []
        self._changed = asyncio.Condition()
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._entered = False
        self._closed = False
        self.callback_errors = 0  # callbacks that raised (each is logged)
        self.rereads = 0  # re-reads after a compacted or failed watch

    # ---- what the app reads ------------------------------------------------------

    @property
    def current(self) -> ConfigVersion | None:
        """The version in use (None only with ``require=False`` before the first one)."""
        return self._current

    @property
    def data(self) -> dict[str, Any]:
        if self._current is None:
            raise ConfigUnavailableError(str(self.name), "no version received yet")
        return self._current.data

    @property
    def source(self) -> Source | None:
        """Where the version in use came from: the cluster, or the cache file."""
        return self._source

    def changes(self, *, include_current: bool = False) -> ChangeStream:
        """Subscribe to new versions; ``include_current`` yields the version in use first."""
        if self._closed:
            raise RuntimeError("the AppConfig is closed")
        s = ChangeStream(self)
        if include_current and self._current is not None:
            s._put(self._current)
        self._streams.add(s)
        return s

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(version)`` (sync or async) for every new version, in order.

        A callback that raises is logged and counted in ``callback_errors``; it never
        stops the delivery. Returns a function that removes the callback.
        """
        self._callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    async def wait_for(self, predicate: Callable[[ConfigVersion], bool]) -> ConfigVersion:
        """Wait until a version satisfying ``predicate`` is in use and its streams and
        callbacks have been served (bound it with ``asyncio.timeout``)."""
        async with self._changed:
            while self._processed is None or not predicate(self._processed):
                await self._changed.wait()
            return self._processed

    # ---- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> AppConfig:
        if self._entered:
            raise RuntimeError("an AppConfig can be entered once")
        self._entered = True
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching, end every change stream, close an owned client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        await self._stack.aclose()
        for s in list(self._streams):
            s.close()
        if self._own_client:
            await self._client.close()

    async def _start(self) -> None:
        need_read = False
        try:
            cv, rev = await self._store.read_current(self.name, timeout=self._connect_timeout)
        except ClientError as e:
            cached = load_cache(self._cache, str(self.name)) if self._cache else None
            if cached is None and self._require:
                where = f"no cache file at {self._cache}" if self._cache else "no cache file configured"
                raise ConfigUnavailableError(str(self.name), f"cluster unreachable ({e}); {where}") from e
            log.warning("config %s: cluster unreachable (%s); starting from %s", self.name, e,
                        f"cached revision {cached.revision}" if cached else "nothing")
            if cached is not None:
                self._current = self._processed = cached
                self._source = "cache"
            need_read = True
        else:
            if cv is None:
                if self._require:
                    raise ConfigNotFoundError(str(self.name))
            else:
                self._current = self._processed = cv
                self._source = "cluster"
                await self._save(cv)
            self._next_revision = rev + 1
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tg.create_task(self._run(need_read), name=f"meshkit-config-{self.name}")

    # ---- the background loop -----------------------------------------------------

    async def _run(self, need_read: bool) -> None:
        pause = 0.05
        while True:
            try:
                if need_read:
                    await self._reread()
                    need_read = False
                    pause = 0.05
                async with self._client.watch(self.name.current_key,
                                              start_revision=self._next_revision) as w:
                    async for resp in w:
                        pause = 0.05
                        for ev in resp.events:
                            await self._on_event(ev.type, ev.kv)
                        if not resp.events:
                            self._next_revision = max(self._next_revision, resp.header.revision + 1)
                log.warning("config %s: watch ended; re-reading", self.name)
                need_read = True
            except WatchCompactedError as e:
                log.info("config %s: watch hit compaction at %d; re-reading", self.name,
                         e.compact_revision)
                need_read = True
                self.rereads += 1
            except (ClientError, EtcdError) as e:
                log.warning("config %s: %s; retrying in %.2fs", self.name, e, pause)
                need_read = True
                self.rereads += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._retry_max)

    async def _reread(self) -> None:
        r = await self._client.get(self.name.current_key)
        cv: ConfigVersion | None = None
        if r.kvs:
            try:
                cv = ConfigVersion.from_kv(r.kvs[0])
            except ConfigCenterError as e:
                log.error("config %s: ignoring a broken record at revision %d: %s", self.name,
                          r.kvs[0].mod_revision, e)
        if cv is None:
            if self._current is not None and not r.kvs:
                log.warning("config %s: no published version in the cluster; keeping revision %d",
                            self.name, self._current.revision)
        elif self._current is None or cv.revision != self._current.revision or self._source != "cluster":
            # A cluster whose revision went back (restored from a backup) still wins
            # over the cache: the cluster is the source of truth once it answers.
            await self._deliver(cv, new=self._current is None or cv.revision != self._current.revision)
        self._next_revision = r.header.revision + 1

    async def _on_event(self, etype: EventType, kv: KeyValue) -> None:
        self._next_revision = max(self._next_revision, kv.mod_revision + 1)
        if etype != EventType.PUT:
            log.warning("config %s: the published version was deleted in the cluster; keeping "
                        "the last one", self.name)
            return
        try:
            cv = ConfigVersion.from_kv(kv)
        except ConfigCenterError as e:
            log.error("config %s: ignoring a broken record at revision %d: %s", self.name,
                      kv.mod_revision, e)
            return
        if self._current is not None and cv.revision <= self._current.revision and self._source == "cluster":
            return
        await self._deliver(cv, new=True)

    async def _save(self, cv: ConfigVersion) -> None:
        if self._cache is None:
            return
        try:
            await asyncio.to_thread(save_cache, self._cache, cv)
        except OSError as e:
            log.error("config %s: cannot write the cache file %s: %s", self.name, self._cache, e)

    async def _deliver(self, cv: ConfigVersion, *, new: bool) -> None:
        self._current, self._source = cv, "cluster"
        await self._save(cv)
        if new:
            for s in list(self._streams):
                s._put(cv)
            for cb in list(self._callbacks):
                try:
                    result = cb(cv)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self.callback_errors += 1
                    log.exception("config %s: a change callback failed (revision %d)", self.name,
                                  cv.revision)
        async with self._changed:  # after the callbacks: wait_for means "fully processed"
            self._processed = cv
            self._changed.notify_all()
