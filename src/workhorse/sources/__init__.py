"""Sources: outside streams and tables whose messages run through workhorse handlers.

A source yields messages; the runtime (``Worker.consume``, ``LocalWorker.perform_receive``)
runs one job per message through the handler's full chain and lets the run's status decide
the acknowledgement. One module per source; the protocol is in ``workhorse.sources.base``.
"""

from workhorse.sources.base import Message, Source, SourceClosed

__all__ = ["Message", "Source", "SourceClosed"]
