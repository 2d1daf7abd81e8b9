"""The app a traced worker process runs: every span it ends is written, one JSON object a
line, to the file named by $SPAN_LOG."""

import json
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
    out=open(os.environ["SPAN_LOG"], "a"),  # noqa: SIM115 - open for the process's life
    formatter=lambda span: json.dumps(json.loads(span.to_json())) + "\n",
)))
app.instrument(tracer_provider=provider)


@app.handler("thumbnail", queue="images")
async def thumbnail(job: wh.Job) -> dict:
    return {"size": job.args["size"] // 2}
