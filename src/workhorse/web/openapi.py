"""The OpenAPI 3.0 document of the dashboard's JSON API (``GET /api/openapi.json``).

Written out rather than generated: Starlette's schema generator reads YAML from docstrings
(another dependency) and would still need every schema by hand, and the document is what
schemathesis fuzzes the API against, so it should say exactly what the endpoints do.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_STATES = ["scheduled", "ready", "running", "retrying", "succeeded", "dead", "cancelled"]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}
_COUNTS: Schema = {"type": "object", "additionalProperties": _INT,
                   "description": "Jobs by state (scheduled, ready, running, ...)."}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj({"error": _STR}),
    "Queue": _obj({"name": _STR, "counts": _COUNTS, "paused": _BOOL,
                   "latency": {**_NUM, "description": "Seconds the oldest ready job waited."}}),
    "Stats": _obj({"counts": _COUNTS, "queues": _INT, "workers": _INT, "busy": _INT,
                   "paused": {"type": "array", "items": _STR}, "now": _NUM}),
    "Point": _obj({"t": _NUM, "succeeded": _INT, "failed": _INT,
                   "latency": _nullable(_NUM), "ready": _nullable(_INT),
                   "running": _nullable(_INT), "retrying": _nullable(_INT)}),
    "Metrics": _obj({"interval": _NUM, "window": _NUM, "step": _NUM, "now": _NUM,
                     "points": {"type": "array", "items": _ref("Point")}}),
    "Worker": _obj({"id": _STR, "host": _STR, "pid": _INT, "concurrency": _INT,
                    "queues": {"type": "array", "items": _STR},
                    "started_at": _NUM, "last_beat": _NUM}),
    "Workers": _obj({"now": _NUM, "workers": {"type": "array", "items": _ref("Worker")}}),
    "Busy": _obj({"now": _NUM, "jobs": {"type": "array", "items": _ref("Job")}}),
    "Attempt": _obj({"attempt": _INT, "status": _nullable(_INT), "error": _nullable(_STR),
                     "traceback": _nullable(_STR), "started_at": _nullable(_NUM),
                     "finished_at": _nullable(_NUM)}),
    "Job": _obj({
        "id": _STR, "name": _STR, "queue": _STR, "state": {"type": "string", "enum": _STATES},
        "status": _nullable(_INT), "args": {"description": "The decoded args (any JSON)."},
        "args_error": _nullable(_STR),
        "headers": {"type": "object", "additionalProperties": _STR},
        "priority": _INT, "attempt": _INT, "enqueued_at": _NUM, "run_at": _NUM,
        "started_at": _nullable(_NUM), "finished_at": _nullable(_NUM),
        "lease_owner": _nullable(_STR), "lease_expires_at": _nullable(_NUM),
        "checkin": _nullable(_STR), "checkin_at": _nullable(_NUM),
        "result": {"description": "The decoded result (any JSON), once succeeded."},
        "error": _nullable(_STR), "traceback": _nullable(_STR),
        "attempts": {"type": "array", "items": _ref("Attempt")},
        "unique_key": _nullable(_STR), "idempotency_key": _nullable(_STR)}),
    "Page": _obj({"items": {"type": "array", "items": _ref("Job")}, "total": _INT,
                  "offset": _INT, "limit": _INT}),
    "Done": _obj({"id": _STR, "action": _STR, "done": _BOOL}),
    "Count": _obj({"count": _INT}),
    "QueuePaused": _obj({"queue": _STR, "paused": _BOOL}),
    "QueuePurged": _obj({"queue": _STR, "count": _INT}),
    "BulkAction": {**_obj({"action": {"type": "string", "enum": ["retry", "requeue", "delete"]},
                           "ids": {"type": "array", "items": _STR, "maxItems": 1000}}),
                   "additionalProperties": False},
    "BulkResult": _obj({"action": _STR, "done": {"type": "array", "items": _STR},
                        "skipped": {"type": "array", "items": _STR}}),
}


def _reply(description: str, schema: str) -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema)}}}


_BAD = _reply("A parameter the API cannot use.", "Error")
_NOT_FOUND = _reply("No such job.", "Error")
_NO_ROUTE = _reply("The path names no queue the API can route (one with a line break).",
                   "Error")
_CONFLICT = _reply("The job is in a state the action does not apply to.", "Error")


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 512},
            "description": description}


_FILTERS = [_query("queue", {"type": "string", "maxLength": 512}, "Only jobs of this queue."),
            _query("name", {"type": "string", "maxLength": 512},
                   "Only jobs of this handler.")]
_JOB_ID = _path("job_id", "The job's id.")
_QUEUE = _path("queue", "The queue's name.")


def _op(summary: str, responses: dict[str, Schema], *, tag: str,
        parameters: list[Schema] | None = None, body: str | None = None) -> Schema:
    op: Schema = {"summary": summary, "tags": [tag], "responses": responses,
                  "operationId": summary.lower().replace(" ", "_").replace(",", "")}
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _job_action(verb: str, what: str) -> Schema:
    return {"post": _op(f"{verb} one job", {"200": _reply(what, "Done"), "400": _BAD,
                                            "404": _NOT_FOUND, "409": _CONFLICT},
                        tag="jobs", parameters=[_JOB_ID])}


PATHS: dict[str, Schema] = {
    "/api/stats": {"get": _op("Totals", {"200": _reply("Totals over all queues.", "Stats")},
                              tag="overview")},
    "/api/metrics": {"get": _op(
        "Chart points", {"200": _reply("Throughput, failures and latency of the last hour.",
                                       "Metrics"), "400": _BAD},
        tag="overview", parameters=[_query(
            "step", {"type": "integer", "minimum": 0, "maximum": 3600, "default": 0},
            "Seconds per point: samples are merged (counts summed, the worst latency). "
            "0 or less than the sample interval: one point per sample.")])},
    "/api/queues": {"get": _op("Queues", {"200": {
        "description": "Every queue that has jobs or is paused.",
        "content": {"application/json": {"schema": {"type": "array",
                                                    "items": _ref("Queue")}}}}},
        tag="queues")},
    "/api/queues/{queue}/pause": {"post": _op(
        "Pause a queue", {"200": _reply("Workers take no more jobs of the queue.",
                                        "QueuePaused"), "400": _BAD, "404": _NO_ROUTE},
        tag="queues", parameters=[_QUEUE])},
    "/api/queues/{queue}/resume": {"post": _op(
        "Resume a queue", {"200": _reply("Workers take its jobs again.", "QueuePaused"),
                           "400": _BAD, "404": _NO_ROUTE}, tag="queues", parameters=[_QUEUE])},
    "/api/queues/{queue}/purge": {"post": _op(
        "Purge a queue", {"200": _reply("Every ready job of the queue was deleted.",
                                        "QueuePurged"), "400": _BAD, "404": _NO_ROUTE},
        tag="queues", parameters=[_QUEUE])},
    "/api/workers": {"get": _op("Workers", {"200": _reply(
        "Worker processes as their heartbeats describe them.", "Workers")}, tag="workers")},
    "/api/busy": {"get": _op("Busy jobs", {"200": _reply(
        "Running jobs with their check-ins.", "Busy")}, tag="workers")},
    "/api/jobs": {"get": _op(
        "List jobs", {"200": _reply("A page of jobs, oldest first.", "Page"), "400": _BAD},
        tag="jobs", parameters=[
            _query("state", {"type": "string", "enum": _STATES}, "Only jobs in this state."),
            *_FILTERS,
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                   "Jobs per page."),
            _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9,
                              "default": 0}, "Jobs to skip.")])},
    "/api/jobs/retry-all": {"post": _op(
        "Retry every job in a state", {"200": _reply("How many jobs were made ready.", "Count"),
                                       "400": _BAD},
        tag="jobs", parameters=[
            _query("state", {"type": "string", "enum": ["retrying", "dead", "cancelled"],
                             "default": "dead"},
                   "The state to retry (dead unless given)."), *_FILTERS])},
    "/api/jobs/requeue-all": {"post": _op(
        "Run every waiting job now", {"200": _reply("How many jobs were made due now.",
                                                    "Count"), "400": _BAD},
        tag="jobs", parameters=[
            _query("state", {"type": "string", "enum": ["scheduled", "retrying"]},
                   "Only this state (both unless given)."), *_FILTERS])},
    "/api/jobs/delete-all": {"post": _op(
        "Delete every job in a state", {"200": _reply("How many jobs were deleted.", "Count"),
                                        "400": _BAD},
        tag="jobs", parameters=[
            {**_query("state", {"type": "string", "enum": [
                "scheduled", "ready", "retrying", "succeeded", "dead", "cancelled"]},
                "The state to delete (required; running jobs are never deleted)."),
             "required": True}, *_FILTERS])},
    "/api/jobs/bulk": {"post": _op(
        "Act on many jobs", {"200": _reply("The ids acted on and those skipped (not found, "
                                           "or in a state the action does not apply to).",
                                           "BulkResult"), "400": _BAD},
        tag="jobs", body="BulkAction")},
    "/api/jobs/{job_id}": {
        "get": _op("One job", {"200": _reply("The job with its attempts.", "Job"),
                               "400": _BAD, "404": _NOT_FOUND},
                   tag="jobs", parameters=[_JOB_ID]),
        "delete": _op("Delete a job", {"200": _reply("Deleted.", "Done"), "400": _BAD,
                                       "404": _NOT_FOUND, "409": _CONFLICT},
                      tag="jobs", parameters=[_JOB_ID])},
    "/api/jobs/{job_id}/retry": _job_action("Retry", "The job is ready to run again."),
    "/api/jobs/{job_id}/requeue": _job_action("Requeue", "The waiting job is ready now."),
    "/api/jobs/{job_id}/delete": _job_action("Delete", "Deleted (a form-friendly DELETE)."),
}


def _with(paths: dict[str, Schema], status: str, reply: Schema) -> dict[str, Schema]:
    """``paths`` with one more documented response on every operation."""
    return {path: {method: {**op, "responses": {**op["responses"], status: reply}}
                   for method, op in ops.items()}
            for path, ops in paths.items()}


def openapi_document(*, server: str = "/", secured: str | None = None) -> Schema:
    """The document, with ``server`` as the base URL and the auth scheme if one is set."""
    document: Schema = {
        "openapi": "3.0.3",
        "info": {"title": "workhorse dashboard API", "version": "1",
                 "description": "See and steer a workhorse store: queues, workers, jobs."},
        "servers": [{"url": server}],
        "paths": _with(PATHS, "503", _reply("The store cannot be reached.", "Error")),
        "components": {"schemas": SCHEMAS},
    }
    if secured is not None:
        scheme = ({"type": "http", "scheme": "bearer"} if secured == "bearer"
                  else {"type": "http", "scheme": "basic"})
        document["components"] = {"schemas": SCHEMAS, "securitySchemes": {secured: scheme}}
        document["security"] = [{secured: []}]
        document["paths"] = _with(document["paths"], "401",
                                  _reply("No valid credentials.", "Error"))
    return document
