"""The "Batches" page of the Airflow UI, registered through the ``airflow.plugins`` entry point.

Airflow imports every plugin in every process that loads plugins, task processes included,
so this module costs next to nothing: the FastAPI app behind the page (and FastAPI, Jinja2,
the HTTP clients) is only built on the first request the api-server routes to it.

The app is mounted at :data:`URL_PREFIX`, outside the paths Airflow reserves (``/api/v2``,
``/ui``, ``/execution``, ``/auth``, ``/pluginsv2``); the menu entry is an ``external_views``
item that shows the page inside the UI. Access is checked on every request against
Airflow's auth manager: see :mod:`airflow_provider_anthropix.plugins.security`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/anthropix"
PAGE_PATH = "/batches"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that builds the real one on its first request (once, whatever the concurrency)."""

    def __init__(self, factory: str) -> None:
        self._factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                module_name, _, attribute = self._factory.partition(":")
                import importlib

                self._app = getattr(importlib.import_module(module_name), attribute)()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app if self._app is not None else self._build()
        await app(scope, receive, send)


class AnthropixPlugin(AirflowPlugin):
    """Adds the Batches page (``/anthropix/batches``) and its menu entry to the Airflow UI."""

    name = "anthropix"
    fastapi_apps = [
        {
            "app": LazyApp("airflow_provider_anthropix.plugins.app:create_app"),
            "url_prefix": URL_PREFIX,
            "name": "Anthropix batches",
        }
    ]
    external_views = [
        {
            "name": "Batches",
            "href": URL_PREFIX + PAGE_PATH,
            "destination": "nav",
            "category": "browse",
            "url_route": "anthropix-batches",
        }
    ]
