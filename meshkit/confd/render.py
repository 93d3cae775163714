"""Rendering a resource's template with Jinja2 over one :class:`Snapshot`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from meshkit.confd.errors import TemplateRenderError
from meshkit.confd.funcs import make_functions
from meshkit.confd.resource import TemplateResource
from meshkit.confd.store import Snapshot

__all__ = ["Renderer"]


class Renderer:
    """The Jinja2 environment of one resource (its delimiters, CONFDIR/templates as loader).

    Templates are cached and re-read when their file changes on disk; :meth:`clear`
    drops the cache (after a file-system event). ``render`` is synchronous and pure
    apart from DNS and file-existence lookups, so it may run in a worker thread.
    """

    def __init__(self, resource: TemplateResource, templates_dir: str | os.PathLike[str], *,
                 nameservers: Sequence[tuple[str, int]] | None = None) -> None:
        self.resource = resource
        self.templates_dir = Path(templates_dir)
        self._nameservers = nameservers
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.templates_dir)),
            variable_start_string=resource.delimiters[0],
            variable_end_string=resource.delimiters[1],
            block_start_string=resource.block_delimiters[0],
            block_end_string=resource.block_delimiters[1],
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
            auto_reload=True,
        )

    def clear(self) -> None:
        if self.env.cache is not None:
            self.env.cache.clear()

    def render(self, snap: Snapshot) -> str:
        """The template's text over ``snap``; raises :class:`TemplateRenderError`."""
        r = self.resource
        funcs = make_functions(snap, missing_key=r.missing_key, defaults=r.defaults,
                               registry_prefix=r.registry_prefix, nameservers=self._nameservers)
        context: dict[str, Any] = dict(funcs)
        context["revision"] = snap.revision
        # Functions are also filters unless Jinja2 has one of the name (bound to this
        # snapshot: renders of one resource never overlap).
        for name, fn in funcs.items():
            if name not in jinja2.filters.FILTERS:
                self.env.filters[name] = fn
        try:
            return self.env.get_template(r.src).render(context)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateRenderError(r.src, f"line {e.lineno}: {e.message}") from None
        except jinja2.TemplateNotFound as e:
            raise TemplateRenderError(r.src, f"template not found: {e.name}") from None
        except Exception as e:  # any failure inside the template is this resource's error
            raise TemplateRenderError(r.src, f"{type(e).__name__}: {e}") from None
