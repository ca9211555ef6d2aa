"""Ragtide: retrieval-augmented chat built to run as stateless, autoscaled replicas.

Operators need only a few names from here; plugin authors use the SPI modules
``ragtide.types``, ``ragtide.components``, ``ragtide.errors`` and ``ragtide.testing``.
Importing this package does no work: settings, models and stores are built by
``create_app(settings)`` or the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]

if TYPE_CHECKING:
    from ragtide.api.app import create_app
    from ragtide.settings import Settings


def __getattr__(name: str) -> Any:
    # Lazy so that `import ragtide` (and the CLI's --help) stays cheap.
    if name == "create_app":
        from ragtide.api.app import create_app

        return create_app
    if name == "Settings":
        from ragtide.settings import Settings

        return Settings
    raise AttributeError(name)
