"""The Plivo XML server: a Flask app answering Plivo's webhooks (answer, hangup, status,
fallback, dial-action) with XML built by the plivo SDK, every webhook's V3 signature checked.

It is a separate process from the daemon and imports only ``bridge.settings`` and
``bridge.privacy`` from the bridge package (an import-linter contract keeps it so).
"""

from xml_server.app import create_app

__all__ = ["create_app"]
