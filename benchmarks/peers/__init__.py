"""Peer serving stacks on the image pipeline (KServe, Ray Serve, FastAPI) and the runner that compares them.

``python -m benchmarks.peers`` (``__main__.py``) runs the comparison; the peer
servers (``fastapi_app.py``, ``ray_app.py``, ``kserve_app.py``) run from a
separate environment made by ``python -m benchmarks.peers --setup``, and all
share the pipeline of ``pipeline.py``.
"""

from pathlib import Path

PEERS_VENV = Path(__file__).resolve().parent.parent / ".peers-venv"
"""The peers' environment (git-ignored)."""


def peers_python() -> Path:
    """The peers' environment's interpreter (absent until ``--setup``)."""
    return PEERS_VENV / "bin" / "python"
