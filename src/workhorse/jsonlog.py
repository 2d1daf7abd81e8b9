"""JSON log lines: a ``logging.Formatter`` that writes one JSON object per record.

Used by ``workhorse worker --log-format json``. A dozen lines of stdlib do what
python-json-logger would; not worth a dependency of the core.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

#: The attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, then every ``extra`` field, then ``exc_info`` as text.

    Values JSON cannot hold are written as their ``repr``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=repr, ensure_ascii=False)
