"""Service configuration: defaults (declared once in `settings.SETTINGS`), then TOXISERVE_* environment
variables, then the caller's overrides."""

from __future__ import annotations

from .settings import ConfigError, ServiceSettings, defaults_object, settings_from

__all__ = ["ConfigError", "DefaultConfig", "ServiceSettings", "settings_from"]

DefaultConfig = defaults_object()
