"""meshkit: a Python etcd and the service-mesh tools built on its public API."""

__version__ = "0.1.0"
