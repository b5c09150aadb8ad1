"""The bundled models: built at install or first use from data sets that ship with scikit-learn, and their routes.

``build`` trains the models and writes a Triton model repository; ``BUNDLED_ROUTES``
is the routes file that serves them (what ``switchyard serve`` uses when no
routes file is given).
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_ROUTES = Path(__file__).with_name("default_routes.toml")
"""The routes of the bundled models."""
