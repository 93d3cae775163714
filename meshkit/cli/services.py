"""``meshkit services``: list registered services and their instances."""

from meshkit.cli.register import services_main as main

__all__ = ["main"]
