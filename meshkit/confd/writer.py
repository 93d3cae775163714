"""Staging, comparing and atomically swapping a destination file (all synchronous: run in a thread)."""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from meshkit.confd.resource import TemplateResource

__all__ = ["StagedFile", "diff", "discard", "install", "stage", "wanted_attrs"]


@dataclass(frozen=True, slots=True)
class StagedFile:
    path: str
    dest: str
    mode: int
    uid: int
    gid: int
    unchanged: bool  # same content, mode and owner as the destination


def wanted_attrs(res: TemplateResource) -> tuple[int, int, int]:
    """Mode, uid, gid the destination should have (confd's defaults: the existing file's
    mode or 0644, and confd's own effective uid/gid)."""
    mode = res.mode
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(res.dest).st_mode)
        except FileNotFoundError:
            mode = 0o644
    uid = res.uid if res.uid is not None else os.geteuid()
    gid = res.gid if res.gid is not None else os.getegid()
    return mode, uid, gid


def stage(res: TemplateResource, content: bytes) -> StagedFile:
    """Write ``content`` to a new file beside the destination, with the wanted mode and owner."""
    dest = Path(res.dest)
    mode, uid, gid = wanted_attrs(res)
    fd, path = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".stage", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
            if (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), uid, gid)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return StagedFile(path, str(dest), mode, uid, gid, _same(path, str(dest), content, mode, uid, gid))


def _same(path: str, dest: str, content: bytes, mode: int, uid: int, gid: int) -> bool:
    try:
        st = os.stat(dest)
        with open(dest, "rb") as f:
            current = f.read()
    except FileNotFoundError:
        return False
    return (current == content and stat.S_IMODE(st.st_mode) == mode
            and st.st_uid == uid and st.st_gid == gid)


def discard(staged: StagedFile) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged.path)


def install(staged: StagedFile, *, backup_suffix: str = "") -> None:
    """fsync the staged file, keep a backup of the old one if asked, rename over the
    destination (atomic: readers see the old or the new file, never a mix), fsync the
    directory so the rename survives a crash."""
    fd = os.open(staged.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dest = Path(staged.dest)
    if backup_suffix and dest.exists():
        backup = dest.with_name(dest.name + backup_suffix)
        tmp_fd, tmp = tempfile.mkstemp(prefix=f".{backup.name}.", suffix=".stage", dir=dest.parent)
        try:
            with os.fdopen(tmp_fd, "wb") as out, open(dest, "rb") as src:
                out.write(src.read())
                os.fchmod(out.fileno(), stat.S_IMODE(os.stat(dest).st_mode))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, backup)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    os.replace(staged.path, staged.dest)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def diff(res: TemplateResource, content: str) -> str:
    """A unified diff from the destination to ``content`` (``--noop``), with a mode line
    when only the mode would change; empty when nothing would change."""
    try:
        with open(res.dest, encoding="utf-8", errors="replace") as f:
            old = f.read()
        old_mode: int | None = stat.S_IMODE(os.stat(res.dest).st_mode)
    except FileNotFoundError:
        old, old_mode = "", None
    mode, _uid, _gid = wanted_attrs(res)
    text = "".join(difflib.unified_diff(
        old.splitlines(keepends=True), content.splitlines(keepends=True),
        fromfile=res.dest if old_mode is not None else "/dev/null", tofile=res.dest))
    if text and not text.endswith("\n"):
        text += "\n\\ No newline at end of file\n"
    if old_mode is not None and old_mode != mode:
        text = f"mode {old_mode:04o} -> {mode:04o} {res.dest}\n" + text
    return text
