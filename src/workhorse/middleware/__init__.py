"""Built-in adapters (middleware). Each returns an ``Adapter``: ``Handler -> Handler``.

    app.use(wh.middleware.logging(), wh.middleware.timing())
"""

from workhorse.middleware.health import HealthCheck as HealthCheck
from workhorse.middleware.health import health as health
from workhorse.middleware.log import logging as logging
from workhorse.middleware.recover import recover as recover
from workhorse.middleware.timeout import timeout as timeout
from workhorse.middleware.timing import timing as timing

__all__ = ["HealthCheck", "health", "logging", "recover", "timeout", "timing"]
