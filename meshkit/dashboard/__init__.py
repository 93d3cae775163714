"""``meshkit dashboard``: a web dashboard for any etcd v3 cluster.

Pages for the members (status, health, alarms), a key browser (prefix tree, value
view with JSON/YAML pretty printing, history, guarded put/delete), the registry's
services, locks and elections, and the config center (versions, diff, rollback),
updated live over server-sent events fed by etcd watches. It uses only
``meshkit.client`` (and the registry, config center and concurrency key layouts), so it
works against ``meshkit server`` and a real etcd. With etcd auth on, each browser
logs in as an etcd user and the dashboard acts with that user's rights only.

    async with Dashboard(DashboardConfig(endpoints=("127.0.0.1:2379",),
                                         listen="127.0.0.1:8080")) as d:
        print(d.url)
        ...

See docs/dashboard.md.
"""

from meshkit.dashboard.config import DashboardConfig
from meshkit.dashboard.server import Dashboard

__all__ = ["Dashboard", "DashboardConfig"]
