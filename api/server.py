"""Builds the API's parts from Settings and serves them with uvicorn (`chimera api`)."""
from __future__ import annotations

import logging

from api.app import Deps, create_app
from api.keys import KeyStore
from api.ratelimit import RateLimiter
from api.store import Store
from api.view import View
from api.writer import Writer
from streams.settings import Settings
from topics import security


def build(settings: Settings, *, keys: KeyStore | None = None, with_health: bool = True):
    """The ASGI app for `settings` (the view starts with the app's lifespan)."""
    a = settings.api
    store = Store()
    kafka = security.confluent()      # KAFKA_SECURITY_* (SASL, TLS) for the writer and the view
    deps = Deps(settings=a, keys=keys or KeyStore.load(a.keys_file), store=store,
                writer=Writer(settings.bootstrap, a.write_timeout_s, kafka),
                limiter=RateLimiter(a.rate_per_minute, a.burst), view=View(settings.bootstrap, store, kafka_config=kafka))
    if with_health:
        from api import health
        deps.health = health.Checks(settings, deps.view)
    return create_app(deps)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    import uvicorn
    from topics import logs
    logs.setup("api")
    app = build(settings)
    # uvicorn's access log names method, path and status: never headers, so never a key
    uvicorn.run(app, host=host or settings.api.host, port=port or settings.api.port, log_config=None,
                log_level=logging.getLevelName(logging.getLogger().level).lower())
