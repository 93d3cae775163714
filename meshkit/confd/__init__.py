"""confd for etcd v3: templates rendered from the cluster, checked, swapped atomically, reloaded.

Compatible with confd's template resources (``conf.d/*.toml``, read unchanged, or the
same in YAML) and function names (in Jinja2), built on the public v3 API only
(:mod:`meshkit.client`), so it runs against meshkit's server and a real etcd.

    async with Client(endpoints) as client:
        outcomes = await Confd(client, ConfdConfig(confdir, mode="onetime")).run_once()
        async with Confd(client, ConfdConfig(confdir, mode="watch")) as confd:
            await confd.wait()

See ``docs/confd.md``.
"""

from meshkit.confd.commands import CommandResult, run_command
from meshkit.confd.errors import (
    ConfdError,
    MissingKeyError,
    ResourceConfigError,
    TemplateRenderError,
)
from meshkit.confd.funcs import Instance, instances, make_functions, parse_instance, services
from meshkit.confd.render import Renderer
from meshkit.confd.resource import TemplateResource, load_resource, load_resources
from meshkit.confd.runner import (
    Confd,
    ConfdConfig,
    ReloadGroup,
    ResourceOutcome,
    ResourceRunner,
    ResourceStatus,
)
from meshkit.confd.store import KVPair, Snapshot, fetch, snapshot_from

__all__ = [
    "CommandResult",
    "Confd",
    "ConfdConfig",
    "ConfdError",
    "Instance",
    "KVPair",
    "MissingKeyError",
    "ReloadGroup",
    "Renderer",
    "ResourceConfigError",
    "ResourceOutcome",
    "ResourceRunner",
    "ResourceStatus",
    "Snapshot",
    "TemplateRenderError",
    "TemplateResource",
    "fetch",
    "instances",
    "load_resource",
    "load_resources",
    "make_functions",
    "parse_instance",
    "run_command",
    "services",
    "snapshot_from",
]
