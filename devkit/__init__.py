"""Development tools, not installed with the package: fake cloud providers, the fake Plivo REST
API, the in-memory leg and the manual clock, Kamailio and XML-server runners.

Tests and benches import it from the checkout (pytest's ``pythonpath = ["."]``; bench scripts run
from the repository root). The daemon's packages never import it (an import contract).
"""
