"""Pigeon's configuration: one TOML file → frozen, validated dataclasses.

``find_config`` picks the file (``--config``, ``$PIGEON_CONFIG``, ``/etc/pigeon/pigeon.toml``,
else the embedded development default), ``load_config`` / ``parse_config`` read it. Every
problem is a ``ConfigError`` naming the file and the dotted key. See ``model`` for the values
and their defaults, ``loader`` for the rules.
"""

from pigeon.config.loader import (
    DEFAULT_CONFIG_TOML,
    EMBEDDED_SOURCE,
    SYSTEM_CONFIG_PATH,
    default_config,
    find_config,
    load_config,
    parse_config,
)
from pigeon.config.model import (
    AuthConfig,
    BareNewline,
    Config,
    DeliveryConfig,
    DnsConfig,
    Endpoint,
    Limits,
    Listen,
    QueueConfig,
    SmtpConfig,
)
from pigeon.config.reader import ConfigError

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "EMBEDDED_SOURCE",
    "SYSTEM_CONFIG_PATH",
    "AuthConfig",
    "BareNewline",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "DnsConfig",
    "Endpoint",
    "Limits",
    "Listen",
    "QueueConfig",
    "SmtpConfig",
    "default_config",
    "find_config",
    "load_config",
    "parse_config",
]
