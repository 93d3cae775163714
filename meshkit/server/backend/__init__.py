"""Durable transactional backend (SQLite); schema in :mod:`.schema`."""

from meshkit.server.backend.backend import Backend, KVRow

__all__ = ["Backend", "KVRow"]
