"""The confd process: resources rendered once, on a watch, or on an interval.

``Confd`` is an async context manager (like aiohttp's ``AppRunner``): entering it
starts one task per resource, the file watcher and the status endpoint inside one
``asyncio.TaskGroup``; leaving it cancels them. ``run_once()`` is ``--onetime``.

The order of one round for a resource (:meth:`ResourceRunner.process`):

1. read every key of the resource at one revision R (:func:`meshkit.confd.store.fetch`);
2. render the template over that snapshot (in a worker thread);
3. stage the output beside the destination; if content, mode and owner are the same,
   stop here;
4. run ``check_cmd`` on the staged file (with its timeout); on failure keep the old
   file, record the command's output, keep the staged file only if asked;
5. fsync, keep a backup if asked, rename over the destination, fsync the directory;
6. run ``reload_cmd`` through the resource's reload group (members of one group
   that changed together reload once).

In watch mode the resource then watches its keys from R + 1, so every change after
the snapshot arrives (the client resumes watches across failures); each change
re-renders at the then-current revision after the quiescence window, and events
already covered by a render are ignored. A compacted revision ends the watch and
starts over with a full read.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client, WatchCompactedError
from meshkit.confd.commands import CommandResult, expand, run_command
from meshkit.confd.errors import ResourceConfigError, TemplateRenderError
from meshkit.confd.render import Renderer
from meshkit.confd.resource import TemplateResource, load_resources
from meshkit.confd.store import Snapshot, fetch, key_matches
from meshkit.confd.writer import diff, discard, install, stage

__all__ = ["Confd", "ConfdConfig", "ReloadGroup", "ResourceOutcome", "ResourceRunner", "ResourceStatus"]

log = get_logger("confd")

Mode = Literal["onetime", "watch", "interval"]
STUCK_MARGIN = 60.0


@dataclass(frozen=True)
class ConfdConfig:
    """What ``meshkit confd`` was asked to do (flags and their defaults)."""

    confdir: str = "/etc/confd"
    mode: Mode = "interval"
    interval: float = 600.0
    prefix: str = ""
    noop: bool = False
    sync_only: bool = False
    keep_stage_file: bool = False
    status_listen: str = ""  # HOST:PORT, "" for none
    watch_files: bool = True
    stuck_after: float = 0.0  # 0: per resource, its wait.max + command timeouts + 60 s
    retry_min: float = 0.5  # backoff while the cluster cannot be read
    retry_max: float = 30.0
    group_settle: float = 0.05  # how long a reload group waits for its other members
    nameservers: tuple[tuple[str, int], ...] = ()  # for lookupSRV; () = /etc/resolv.conf

    @property
    def confd_dir(self) -> Path:
        return Path(self.confdir) / "conf.d"

    @property
    def templates_dir(self) -> Path:
        return Path(self.confdir) / "templates"

    def validate(self) -> list[str]:
        problems = []
        if self.mode not in ("onetime", "watch", "interval"):
            problems.append(f"mode must be onetime, watch or interval, got {self.mode!r}")
        if self.mode == "interval" and self.interval <= 0:
            problems.append("interval must be positive")
        if not self.confd_dir.is_dir():
            problems.append(f"{self.confd_dir} is not a directory")
        if not self.templates_dir.is_dir():
            problems.append(f"{self.templates_dir} is not a directory")
        if self.status_listen:
            host, sep, port = self.status_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                problems.append(f"status listen address must be HOST:PORT, got {self.status_listen!r}")
        if self.stuck_after < 0:
            problems.append("stuck_after must not be negative")
        if not 0 < self.retry_min <= self.retry_max:
            problems.append("retry_min must be positive and at most retry_max")
        if self.group_settle < 0:
            problems.append("group_settle must not be negative")
        return problems


@dataclass
class ResourceStatus:
    """What the status endpoint reports for one resource (mutated by its runner only)."""

    name: str
    src: str
    dest: str
    group: str
    state: str = "starting"
    last_revision: int = 0  # revision of the last snapshot fully processed
    last_success: float | None = None  # wall-clock time of that round
    last_write: float | None = None  # when the destination was last replaced
    last_error: str = ""
    last_error_output: str = ""
    last_error_at: float | None = None
    renders: int = 0
    writes: int = 0
    reloads: int = 0
    failures: int = 0
    compactions: int = 0  # full re-reads after the watch hit a compacted revision
    busy_since: float | None = None  # monotonic (the Clock's) start of the unfinished round

    def as_dict(self, now: float, stuck_after: float) -> dict[str, Any]:
        return {
            "name": self.name, "src": self.src, "dest": self.dest, "reload_group": self.group,
            "state": self.state, "last_revision": self.last_revision,
            "last_success": self.last_success, "last_write": self.last_write,
            "last_error": self.last_error, "last_error_output": self.last_error_output,
            "last_error_at": self.last_error_at, "renders": self.renders, "writes": self.writes,
            "reloads": self.reloads, "failures": self.failures, "compactions": self.compactions,
            "busy_for": None if self.busy_since is None else round(now - self.busy_since, 3),
            "stuck": self.stuck(now, stuck_after),
        }

    def stuck(self, now: float, stuck_after: float) -> bool:
        return self.busy_since is not None and now - self.busy_since > stuck_after


@dataclass(frozen=True)
class ResourceOutcome:
    name: str
    ok: bool
    revision: int = 0
    changed: bool = False
    needs_reload: bool = False
    error: str = ""
    output: str = ""
    diff: str = ""


class ReloadGroup:
    """One reload command shared by resources: requests that arrive before a run starts
    share that run; a request during a run gets exactly one run after it."""

    def __init__(self, name: str, command: str, timeout: float, *, clock: Clock, settle: float,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.name = name
        self.command = command
        self.timeout = timeout
        self.reloads = 0
        self.last: CommandResult | None = None
        self._clock = clock
        self._settle = settle
        self._spawn = spawn
        self._lock = asyncio.Lock()
        self._next: asyncio.Future[CommandResult] | None = None

    async def reload(self) -> CommandResult:
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            self._spawn(self._drive(fut))
        return await asyncio.shield(fut)

    async def _drive(self, fut: asyncio.Future[CommandResult]) -> None:
        try:
            async with self._lock:
                if self._settle > 0:
                    await self._clock.sleep(self._settle)
                if self._next is fut:
                    self._next = None
                result = await run_command(self.command, self.timeout)
                self.reloads += 1
                self.last = result
                fut.set_result(result)
        except BaseException as e:
            if self._next is fut:
                self._next = None
            if not fut.done():
                fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            raise

    async def run_now(self) -> CommandResult:
        """One run, outside the coalescing (``--onetime`` calls it once per group)."""
        async with self._lock:
            result = await run_command(self.command, self.timeout)
            self.reloads += 1
            self.last = result
            return result


async def _wait_event(clock: Clock, event: asyncio.Event, timeout: float | None) -> bool:  # noqa: ASYNC109
    """Whether ``event`` was set within ``timeout`` seconds of ``clock`` (None: no limit)."""
    if event.is_set():
        return True
    if timeout is None:
        await event.wait()
        return True
    if timeout <= 0:
        return False
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (waiter, sleeper):
            t.cancel()
        for t in (waiter, sleeper):
            with contextlib.suppress(asyncio.CancelledError):
                await t
    return event.is_set()


class ResourceRunner:
    """Everything about one resource: its renderer, its status, its rounds and its watch."""

    def __init__(self, confd: Confd, resource: TemplateResource) -> None:
        self.confd = confd
        self.resource = resource
        self.renderer = Renderer(resource, confd.config.templates_dir,
                                 nameservers=confd.config.nameservers or None)
        self.status = ResourceStatus(resource.name, resource.src, resource.dest, resource.group)
        self._changed = asyncio.Event()  # a relevant watch event or a kick arrived
        self._watch_error: BaseException | None = None
        self._seen_revision = 0  # newest relevant event revision seen by the watch
        self._kick_pending = False  # a file change asks for a render without a key change

    @property
    def clock(self) -> Clock:
        return self.confd.clock

    def kick(self) -> None:
        """Render again soon (a template file changed)."""
        self.renderer.clear()
        self._kick_pending = True
        self._changed.set()

    # -- one round ---------------------------------------------------------------------------

    def _fail(self, error: str, output: str = "") -> None:
        st = self.status
        st.state = "failed"
        st.failures += 1
        st.last_error = error
        st.last_error_output = output
        st.last_error_at = time.time()
        st.busy_since = None

    def _succeed(self, revision: int) -> None:
        st = self.status
        st.state = "idle"
        st.last_revision = revision
        st.last_success = time.time()
        st.last_error = ""
        st.last_error_output = ""
        st.busy_since = None

    async def process(self, *, defer_reload: bool = False) -> ResourceOutcome:
        """One round (see the module docstring). Errors of the resource itself (template,
        check, reload) are recorded and returned; a cluster that cannot be read raises."""
        r, st = self.resource, self.status
        if st.busy_since is None:
            st.busy_since = self.clock.monotonic()
        st.state = "fetching"
        snap = await fetch(self.confd.client, r.watch_keys, strip_prefix=r.prefix or "/")
        return await self.process_snapshot(snap, defer_reload=defer_reload)

    async def process_snapshot(self, snap: Snapshot, *, defer_reload: bool = False) -> ResourceOutcome:
        r, st, cfg = self.resource, self.status, self.confd.config
        if st.busy_since is None:
            st.busy_since = self.clock.monotonic()
        st.state = "rendering"
        try:
            text = await asyncio.to_thread(self.renderer.render, snap)
        except TemplateRenderError as e:
            log.error("%s: %s (revision %d); %s keeps its current content", r.name, e.detail,
                      snap.revision, r.dest)
            self._fail(str(e))
            return ResourceOutcome(r.name, False, snap.revision, error=str(e))
        st.renders += 1
        if cfg.noop:
            d = await asyncio.to_thread(diff, r, text)
            if d:
                self.confd.out.write(f"# {r.name}: {r.dest} would change (revision {snap.revision})\n{d}")
                self.confd.out.flush()
            self._succeed(snap.revision)
            return ResourceOutcome(r.name, True, snap.revision, changed=bool(d), diff=d)
        try:
            staged = await asyncio.to_thread(stage, r, text.encode("utf-8"))
        except OSError as e:
            self._fail(f"staging {r.dest}: {e}")
            return ResourceOutcome(r.name, False, snap.revision, error=str(e))
        if staged.unchanged:
            await asyncio.to_thread(discard, staged)
            log.debug("%s: %s is up to date (revision %d)", r.name, r.dest, snap.revision)
            self._succeed(snap.revision)
            return ResourceOutcome(r.name, True, snap.revision)
        if r.check_cmd and not cfg.sync_only:
            st.state = "checking"
            res = await run_command(expand(r.check_cmd, src=staged.path, dest=r.dest), r.check_timeout)
            if not res.ok:
                what = "timed out and was killed" if res.timed_out else f"exited with status {res.returncode}"
                msg = f"check_cmd {what}; {r.dest} keeps its current content"
                if cfg.keep_stage_file:
                    msg += f"; staged file kept at {staged.path}"
                else:
                    await asyncio.to_thread(discard, staged)
                log.error("%s: %s (revision %d): %s", r.name, msg, snap.revision, res.output.strip()[:2000])
                self._fail(msg, res.output)
                return ResourceOutcome(r.name, False, snap.revision, error=msg, output=res.output)
        st.state = "writing"
        try:
            await asyncio.to_thread(install, staged, backup_suffix=r.backup)
        except OSError as e:
            await asyncio.to_thread(discard, staged)
            self._fail(f"replacing {r.dest}: {e}")
            return ResourceOutcome(r.name, False, snap.revision, error=str(e))
        st.writes += 1
        st.last_write = time.time()
        log.info("%s: wrote %s (revision %d)", r.name, r.dest, snap.revision)
        if not r.reload_cmd or cfg.sync_only:
            self._succeed(snap.revision)
            return ResourceOutcome(r.name, True, snap.revision, changed=True)
        if defer_reload:
            st.last_revision = snap.revision
            return ResourceOutcome(r.name, True, snap.revision, changed=True, needs_reload=True)
        st.state = "reloading"
        result = await self.confd.group_of(r).reload()
        return self.record_reload(snap.revision, result)

    def record_reload(self, revision: int, result: CommandResult) -> ResourceOutcome:
        r = self.resource
        self.status.reloads += 1
        if not result.ok:
            what = "timed out and was killed" if result.timed_out else f"exited with status {result.returncode}"
            msg = f"reload_cmd {what} (the new {r.dest} is in place)"
            log.error("%s: %s: %s", r.name, msg, result.output.strip()[:2000])
            self._fail(msg, result.output)
            return ResourceOutcome(r.name, False, revision, changed=True, error=msg, output=result.output)
        log.info("%s: reloaded (%s)", r.name, self.confd.group_of(r).name)
        self._succeed(revision)
        return ResourceOutcome(r.name, True, revision, changed=True)

    async def _process_retrying(self) -> ResourceOutcome:
        """:meth:`process`, retried with backoff while the cluster cannot be read."""
        cfg = self.confd.config
        pause = cfg.retry_min
        while True:
            try:
                return await self.process()
            except (MeshkitError, OSError) as e:
                st = self.status
                st.state = "retrying"
                st.last_error = f"reading the cluster: {e}"
                st.last_error_at = time.time()
                log.warning("%s: cannot read the cluster (%s); retrying in %.1fs",
                            self.resource.name, e, pause)
                await self.clock.sleep(pause)
                pause = min(pause * 2, cfg.retry_max)

    # -- the long-running modes ----------------------------------------------------------------

    async def run_interval(self) -> None:
        while True:
            self._changed.clear()
            await self._process_retrying()
            await _wait_event(self.clock, self._changed, self.confd.config.interval)

    async def run_watch(self) -> None:
        while True:
            self._changed.clear()
            outcome = await self._process_retrying()
            try:
                await self._watch_from(outcome.revision)
            except WatchCompactedError as e:
                log.warning("%s: watch from revision %d hit compaction (compact revision %d); "
                            "reading everything again", self.resource.name, outcome.revision + 1,
                            e.compact_revision)
                self.status.compactions += 1
            except MeshkitError as e:
                log.warning("%s: watch failed (%s); reading everything again", self.resource.name, e)
                self.status.last_error = f"watch: {e}"
                self.status.last_error_at = time.time()
                await self.clock.sleep(self.confd.config.retry_min)

    async def _watch_from(self, revision: int) -> None:
        """Watch every key from ``revision + 1``; render again on each relevant change.
        Returns never; raises ``WatchCompactedError`` (and other watch failures)."""
        client = self.confd.client
        self._watch_error = None
        self._seen_revision = revision
        rendered = revision
        watchers = [client.watch(k, prefix=True, start_revision=revision + 1)
                    for k in self.resource.watch_keys]
        pumps = [asyncio.ensure_future(self._pump(k, w))
                 for k, w in zip(self.resource.watch_keys, watchers, strict=True)]
        try:
            while True:
                await self._changed.wait()
                if self._watch_error is not None:
                    raise self._watch_error
                if self._seen_revision <= rendered and not self._kicked():
                    self._changed.clear()
                    continue
                await self._quiesce()
                if self._watch_error is not None:
                    raise self._watch_error
                self._changed.clear()
                outcome = await self._process_retrying()
                rendered = max(rendered, outcome.revision)
                # Events up to the rendered revision are in this render: only newer ones count.
                if self._seen_revision > rendered:
                    self._changed.set()
        finally:
            for p in pumps:
                p.cancel()
            for w in watchers:
                await w.cancel()
            for p in pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await p

    def _kicked(self) -> bool:
        k, self._kick_pending = self._kick_pending, False
        return k

    async def _pump(self, origin: str, watcher: Any) -> None:
        try:
            async for resp in watcher:
                newest = 0
                for ev in resp.events:
                    if key_matches(origin, ev.kv.key.decode("utf-8", errors="replace")):
                        newest = max(newest, ev.kv.mod_revision)
                if newest > self._seen_revision:
                    self._seen_revision = newest
                    if self.status.busy_since is None:
                        self.status.busy_since = self.clock.monotonic()
                        self.status.state = "pending"
                    self._changed.set()
        except asyncio.CancelledError:
            raise
        except MeshkitError as e:
            self._watch_error = e
            self._changed.set()

    async def _quiesce(self) -> None:
        """consul-template's wait: render once no change came for ``wait.min``, but no
        later than ``wait.max`` after the first change."""
        r = self.resource
        if r.wait_min <= 0:
            return
        self.status.state = "waiting"
        first = self.clock.monotonic()
        for _ in range(1_000_000):  # bounded by wait.max in time; the count only guards
            self._changed.clear()
            remaining = first + r.wait_max - self.clock.monotonic()
            if remaining <= 0:
                return
            if not await _wait_event(self.clock, self._changed, min(r.wait_min, remaining)):
                return
            if self._watch_error is not None:
                return


class Confd:
    """``async with Confd(client, config) as confd:`` runs every resource in ``config.mode``.

    ``await confd.run_once()`` (no ``async with``) is ``--onetime``: every resource once,
    each reload group at most once, and the outcomes.
    """

    def __init__(self, client: Client, config: ConfdConfig, *, clock: Clock | None = None,
                 out: TextIO | None = None) -> None:
        problems = config.validate()
        if problems:
            raise ValueError("invalid confd configuration: " + "; ".join(problems))
        self.client = client
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.out: TextIO = out or sys.stdout
        self.runners: dict[str, ResourceRunner] = {}
        self.config_errors: list[ResourceConfigError] = []
        self._groups: dict[str, ReloadGroup] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop_files = asyncio.Event()
        self._status_runner: Any = None
        self._closed = False
        self.status_port = 0

    # -- resources and groups ------------------------------------------------------------------

    def load(self) -> None:
        """(Re)read ``conf.d``; runners of changed resources are replaced."""
        resources, errors = load_resources(self.config.confdir, global_prefix=self.config.prefix)
        self.config_errors = errors
        for e in errors:
            log.error("resource %s", e)
        wanted = {r.name: r for r in resources}
        for name in list(self.runners):
            if name not in wanted or wanted[name] != self.runners[name].resource:
                self._stop_runner(name)
        for name, r in wanted.items():
            if name not in self.runners:
                self.runners[name] = ResourceRunner(self, r)
                if self._tg is not None:
                    self._start_runner(name)
        live_groups = {r.group for r in resources}
        for g in list(self._groups):
            if g not in live_groups:
                del self._groups[g]

    def group_of(self, r: TemplateResource) -> ReloadGroup:
        g = self._groups.get(r.group)
        if g is None or g.command != r.reload_cmd or g.timeout != r.reload_timeout:
            g = ReloadGroup(r.group, r.reload_cmd, r.reload_timeout, clock=self.clock,
                            settle=self.config.group_settle if r.reload_group else 0.0,
                            spawn=self._spawn)
            self._groups[r.group] = g
        return g

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> object:
        if self._tg is not None:
            return self._tg.create_task(coro)
        return asyncio.ensure_future(coro)

    def _start_runner(self, name: str) -> None:
        assert self._tg is not None
        runner = self.runners[name]
        body = runner.run_watch if self.config.mode == "watch" else runner.run_interval
        self._tasks[name] = self._tg.create_task(body(), name=f"confd:{name}")

    def _stop_runner(self, name: str) -> None:
        self.runners.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    # -- onetime ---------------------------------------------------------------------------------

    async def run_once(self) -> list[ResourceOutcome]:
        """Every resource once at its own consistent revision; reload groups run once each."""
        self.load()

        async def one(runner: ResourceRunner) -> ResourceOutcome:
            try:
                return await runner.process(defer_reload=True)
            except (MeshkitError, OSError) as e:
                runner._fail(f"reading the cluster: {e}")
                return ResourceOutcome(runner.resource.name, False, error=str(e))

        runners = list(self.runners.values())
        outcomes = list(await asyncio.gather(*(one(r) for r in runners)))
        by_group: dict[str, list[int]] = {}
        for i, o in enumerate(outcomes):
            if o.needs_reload:
                by_group.setdefault(runners[i].resource.group, []).append(i)
        for indexes in by_group.values():
            first = runners[indexes[0]]
            result = await self.group_of(first.resource).run_now()
            for i in indexes:
                outcomes[i] = runners[i].record_reload(outcomes[i].revision, result)
        for e in self.config_errors:
            outcomes.append(ResourceOutcome(Path(e.path).name, False, error=str(e)))
        return outcomes

    # -- long-running ------------------------------------------------------------------------------

    async def __aenter__(self) -> Confd:
        if self.config.mode == "onetime":
            raise RuntimeError("onetime mode: call run_once() instead of entering the context")
        self.load()
        if self.config.status_listen:
            from meshkit.confd.status import start_status_server

            self._status_runner, self.status_port = await start_status_server(
                self, self.config.status_listen)
        self._main = asyncio.get_running_loop().create_task(self._run(), name="confd")
        await self._started.wait()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for name in self.runners:
                self._start_runner(name)
            if self.config.watch_files:
                tg.create_task(self._watch_files(), name="confd:files")
            self._started.set()

    async def wait(self) -> None:
        """Until the runners end (they end only on close() or an unexpected error)."""
        if self._main is not None:
            await self._main

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_files.set()
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        self._tg = None
        if self._status_runner is not None:
            await self._status_runner.cleanup()

    async def _watch_files(self) -> None:
        import watchfiles

        cfg = self.config
        async for changes in watchfiles.awatch(cfg.confd_dir, cfg.templates_dir,
                                               stop_event=self._stop_files, debounce=200,
                                               step=50, recursive=True):
            paths = [Path(p) for _c, p in changes]
            if any(cfg.confd_dir in p.parents for p in paths):
                log.info("conf.d changed: reloading resources")
                self.load()
            if any(cfg.templates_dir in p.parents for p in paths):
                log.info("templates changed: rendering again")
                for runner in self.runners.values():
                    runner.kick()

    # -- status --------------------------------------------------------------------------------

    def stuck_after(self, r: TemplateResource) -> float:
        return self.config.stuck_after or (r.stuck_budget + STUCK_MARGIN)

    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        resources = [run.status.as_dict(now, self.stuck_after(run.resource))
                     for run in self.runners.values()]
        return {
            "mode": self.config.mode,
            "healthy": not any(r["stuck"] for r in resources),
            "resources": resources,
            "config_errors": [str(e) for e in self.config_errors],
        }

    def stuck(self) -> list[str]:
        now = self.clock.monotonic()
        return [name for name, run in self.runners.items()
                if run.status.stuck(now, self.stuck_after(run.resource))]
