"""``provmint dashboard``: the operator's read-only web pages, apart from the public
service.

- :mod:`.auth`: the token, where it comes from, and how a request shows it;
- :mod:`.app`: the ASGI application (the edges of :mod:`provmint.edge`, the token,
  the routes) and its uvicorn server;
- :mod:`.render`: the pages: HTML and an inline SVG chart, escaped, no script.

The facts shown are :mod:`provmint.stats`'s: the same as ``provmint stats``.
"""

from __future__ import annotations

from provmint.dashboard.app import DEFAULT_SINCE, Dashboard, create_app, serve
from provmint.dashboard.auth import TOKEN_ENV, DashboardToken, is_loopback, resolve_token

__all__ = [
    "DEFAULT_SINCE",
    "TOKEN_ENV",
    "Dashboard",
    "DashboardToken",
    "create_app",
    "is_loopback",
    "resolve_token",
    "serve",
]
