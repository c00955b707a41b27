"""Gateway configuration: its sections (sections.py), the whole file and its overrides
(settings.py).

Names are re-exported here: ``from gateway.config import Settings, load_settings``.
"""

from gateway.config.sections import (
    BUNDLE_SERVICE_HOSTS,
    DEFAULT_BUNDLE_PORT,
    Admin,
    AdminListen,
    Auth,
    BundleListen,
    BundleService,
    Community,
    DecisionLog,
    DryRun,
    Governance,
    Limits,
    Listen,
    LogAnchoring,
    LogShip,
    Policy,
    Response,
    Shadow,
    Transparency,
    Upstream,
    UpstreamTimeouts,
    Usage,
)
from gateway.config.settings import (
    ENV_PREFIX,
    ENV_SEPARATOR,
    Settings,
    apply_env_overrides,
    load_settings,
)

__all__ = [
    "BUNDLE_SERVICE_HOSTS",
    "DEFAULT_BUNDLE_PORT",
    "ENV_PREFIX",
    "ENV_SEPARATOR",
    "Admin",
    "AdminListen",
    "Auth",
    "BundleListen",
    "BundleService",
    "Community",
    "DecisionLog",
    "DryRun",
    "Governance",
    "Limits",
    "Listen",
    "LogAnchoring",
    "LogShip",
    "Policy",
    "Response",
    "Settings",
    "Shadow",
    "Transparency",
    "Upstream",
    "UpstreamTimeouts",
    "Usage",
    "apply_env_overrides",
    "load_settings",
]
