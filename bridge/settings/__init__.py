"""One typed, validated settings schema for both processes (daemon and XML server).

Load with :func:`load_settings`; secrets are never in the schema's TOML sections, they come
from the environment through :class:`Secrets`.
"""

from bridge.settings.loader import SettingsError, default_config_path, load_settings
from bridge.settings.schema import Settings
from bridge.settings.secrets import Secrets

__all__ = ["Secrets", "Settings", "SettingsError", "default_config_path", "load_settings"]
