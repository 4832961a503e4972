"""The latency benchmark's floor: the same swap request and answer over HTTP, and nothing else.

``POST /api/v1/swap-face`` takes the JSON body SwapMeter takes (base64 ``source`` and
``target``), runs the worker's engine (same factory, same options) on a thread of this
process, and answers the JSON SwapMeter answers (the result as base64), through the same
server stack (uvicorn, FastAPI, orjson). No API key, no Tokens, no database, no Redis, no
queue, no worker process: the HTTP p50 of this app over the engine's median is what
HTTP, JSON and base64 alone add, so that SwapMeter's p50 over this one is what its API
checks, metering and queue add. Started by bench/api.py; not part of the product.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pybase64
from fastapi import FastAPI, Request, Response

from app.core.settings import Settings
from app.jobs.runner import process_engine

app = FastAPI()
_engine = process_engine(Settings(_env_file=None))  # type: ignore[call-arg]
_executor = ThreadPoolExecutor(1)  # as the worker: one job at a time, off the event loop


def _swap(source: bytes, target: bytes) -> Any:
    return _engine.swap_image(
        source, target, faces="largest", output_format="jpg", enhance=False, watermark=True
    )


@app.post("/api/v1/swap-face")
async def swap_face(request: Request) -> Response:
    body = orjson.loads(await request.body())
    source = pybase64.b64decode(body["source"], validate=True)
    target = pybase64.b64decode(body["target"], validate=True)
    image = await asyncio.get_running_loop().run_in_executor(_executor, _swap, source, target)
    answer = {
        "status": "success",
        "message": "Face swap completed",
        "job_id": "-",
        "tokens_charged": 1,
        "result": {
            "duration": round(sum(image.timings.values()), 4),
            "resolution": f"{image.width}x{image.height}",
            "faces_swapped": image.faces_swapped,
            "image": pybase64.b64encode_as_string(image.data),
        },
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
