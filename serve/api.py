"""The JSON API: ``POST /v1/classify``, ``GET /healthz``, ``GET /metrics``.

Concurrent requests are micro-batched: requests that arrive while the model is busy
wait, and the next model call scores them all. Under concurrent load (the last call
served several requests) a call also waits up to ``max_wait`` seconds (5 ms) for
more to join; a lone request goes to the model at once. Model calls run one at a
time in a worker thread, so the event loop keeps accepting requests while the model
works. Message texts are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError

from model.data_format import Message, message_from_json
from model.first_stage import merge
from model.labels import LABELS

from .evidence import explain
from .schemas import MAX_BODY_BYTES, MAX_MESSAGES, MAX_TEXT_CHARS, ClassifyRequest, ClassifyResponse, Problem, validation_reason


class MicroBatcher:
    """Gathers the messages of concurrent requests into one model call."""

    def __init__(self, classifier, max_wait: float = 0.005, max_batch: int = 256, enabled: bool = True, observe_batch=None):
        self.classifier = classifier
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.enabled = enabled
        self.observe_batch = observe_batch or (lambda size: None)  # told the number of messages of every model call
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")  # one model call at a time
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Task | None = None
        self._last_call_requests = 0

    async def score(self, messages: list[Message]) -> tuple[np.ndarray, list[bool]]:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.observe_batch(len(messages))
            return await loop.run_in_executor(self.executor, self.classifier.score, messages)
        if self._queue is None or self._loop is not loop:  # a new event loop (a test client's) needs its own queue and server
            self._queue, self._loop = asyncio.Queue(), loop
            self._server = loop.create_task(self._serve(self._queue))  # held, so the task is not collected while it runs
        done = loop.create_future()
        await self._queue.put((messages, done))
        return await done

    async def run(self, function, *args):
        """Run other model work (evidence) in the model thread, in turn with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _serve(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await queue.get()]
            size = len(waiting[0][0])
            while size < self.max_batch and not queue.empty():  # those that queued during the last call
                waiting.append(queue.get_nowait())
                size += len(waiting[-1][0])
            deadline = loop.time() + (self.max_wait if self._last_call_requests > 1 else 0)
            while size < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    waiting.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
                size += len(waiting[-1][0])
            waiting = [(batch, done) for batch, done in waiting if not done.cancelled()]  # their clients left
            if not waiting:
                continue
            self._last_call_requests = len(waiting)
            messages = [m for batch, _ in waiting for m in batch]
            self.observe_batch(len(messages))
            try:
                probs, truncated = await loop.run_in_executor(self.executor, self.classifier.score, messages)
            except Exception as error:
                for _, done in waiting:
                    if not done.done():
                        done.set_exception(error)
                continue
            start = 0
            for batch, done in waiting:
                # A request cancelled during the call has a finished future; setting it would raise and end this loop.
                if not done.done():
                    done.set_result((probs[start : start + len(batch)], truncated[start : start + len(batch)]))
                start += len(batch)


class RateLimiter:
    """A token bucket per client: on average ``rate`` requests a second, up to ``burst`` at once; ``rate`` 0 is no limit."""

    def __init__(self, rate: float = 0.0, burst: int = 20, max_clients: int = 100_000, clock=time.monotonic):
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client: (tokens, when counted), least recently seen first

    def retry_after(self, client: str) -> float:
        """0 if the client may go now (a token is taken), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, counted = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - counted) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]
        return wait


class Metrics:
    """Prometheus counters and histograms of one app (its own registry, so tests can build many apps)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("extortion_guard_requests", "API requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "extortion_guard_request_seconds",
            "Latency of /v1/classify",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
        )
        self.labels = Counter("extortion_guard_labels", "Labels returned", ["label"], registry=self.registry)
        self.batch_messages = Histogram(
            "extortion_guard_batch_messages", "Messages per model call", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
        )


def problem(status: int, reason: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def parse_body(body: bytes) -> tuple[list[Message], list[bool], bool] | JSONResponse:
    """The messages of a request, which were cut to :data:`MAX_TEXT_CHARS`, and whether evidence is asked; or the error response."""
    if len(body) > MAX_BODY_BYTES:
        return problem(413, f"body is {len(body):,} bytes; the limit is {MAX_BODY_BYTES:,}")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return problem(422, f"body is not valid JSON: {error}")
    if isinstance(payload, dict) and isinstance(payload.get("messages"), list) and len(payload["messages"]) > MAX_MESSAGES:
        return problem(413, f"{len(payload['messages'])} messages; the limit is {MAX_MESSAGES} per request")
    try:
        request = ClassifyRequest.model_validate(payload)
    except ValidationError as error:
        return problem(422, validation_reason(error))
    messages, cut = [], []
    for i, item in enumerate(request.messages):
        try:  # the data format's own rules (non-blank text) on top of the schema
            message = message_from_json(item.model_dump(exclude_none=True))
        except ValueError as error:
            return problem(422, f"messages[{i}]: {error}")
        cut.append(len(message.text) > MAX_TEXT_CHARS)
        messages.append(Message(message.text[:MAX_TEXT_CHARS], message.context, message.id, message.role))
    return messages, cut, request.evidence


def authorised(request: Request, keys: list[str]) -> bool:
    if not keys:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip().encode(), key.encode()) for key in keys)


def create_api(
    classifier,
    api_keys: list[str] | None = None,
    micro_batching: bool = True,
    max_wait: float = 0.005,
    rate_per_key: float = 0.0,
    burst_per_key: int = 20,
    max_in_flight: int = 256,
    first_stage=None,
) -> FastAPI:
    """The FastAPI app serving ``classifier``; ``api_keys`` (when any) are required as bearer tokens on /v1/classify.

    ``rate_per_key``: requests a second each key (or, with no keys, each client address) may make on average, with
    bursts up to ``burst_per_key`` (0: no limit; over it, 429 with Retry-After). ``max_in_flight``: requests being
    answered at once; more get 503 with Retry-After, so that a flood queues in the clients, not in this process.
    ``first_stage``: a :class:`model.first_stage.FirstStage` that answers the messages it is sure are normal; a request
    for evidence always asks the model, so that the evidence explains the label.
    """
    app = FastAPI(title="Extortion Guard", docs_url="/v1/docs", openapi_url="/v1/openapi.json")
    metrics = Metrics()
    batcher = MicroBatcher(classifier, max_wait=max_wait, enabled=micro_batching, observe_batch=metrics.batch_messages.observe)
    keys = list(api_keys or [])
    limiter = RateLimiter(rate_per_key, burst_per_key)
    in_flight = 0
    app.state.batcher, app.state.metrics, app.state.classifier = batcher, metrics, classifier

    errors = {
        status: {"model": Problem, "description": why}
        for status, why in (
            (401, "Missing or wrong API key"),
            (413, "Too many messages or too large a body"),
            (422, "Malformed body"),
            (429, "Over the key's request rate (Retry-After)"),
            (503, "Too many requests at once (Retry-After)"),
        )
    }
    # The body is parsed by hand (after the key check, with 413 before 422), so it is declared here for the docs.
    body_doc = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}}}}
    }

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors, openapi_extra=body_doc)
    async def classify(request: Request):
        started = time.perf_counter()
        response = await _classify(request)
        metrics.requests.labels("/v1/classify", str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _classify(request: Request):
        nonlocal in_flight
        if not authorised(request, keys):
            return problem(401, "missing or wrong API key: send Authorization: Bearer KEY")
        client = request.headers.get("authorization", "") if keys else (request.client.host if request.client else "")
        if wait := limiter.retry_after(client):
            return problem(429, f"more than {rate_per_key:g} requests a second for this {'key' if keys else 'client'}", retry_after=wait)
        if in_flight >= max_in_flight:
            return problem(503, f"{max_in_flight} requests are being answered; try again shortly", retry_after=1)
        in_flight += 1
        try:
            return await _answer(request)
        finally:
            in_flight -= 1

    async def _answer(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return problem(413, f"body is {int(declared):,} bytes; the limit is {MAX_BODY_BYTES:,}")
        parsed = parse_body(await request.body())
        if isinstance(parsed, JSONResponse):
            return parsed
        messages, cut, want_evidence = parsed
        probs, truncated, by_model = await score(messages, use_first_stage=first_stage is not None and not want_evidence)
        results = []
        for message, row, window_cut, chars_cut, asked in zip(messages, probs, truncated, cut, by_model, strict=True):
            label = LABELS[int(row.argmax())]
            metrics.labels.labels(label).inc()
            result = {
                "id": message.id,
                "label": label,
                "probabilities": {label: round(float(p), 6) for label, p in zip(LABELS, row, strict=True)},
                "truncated": bool(window_cut or chars_cut),
                "decided_by": "model" if asked else "first_stage",
            }
            if want_evidence:
                result["evidence"] = (await batcher.run(explain, classifier, message)).to_json()
            results.append(result)
        return JSONResponse({"model_version": classifier.version, "results": results})

    async def score(messages: list[Message], use_first_stage: bool) -> tuple[np.ndarray, list[bool], np.ndarray]:
        """Probabilities, truncation flags, and whether the model (not the first stage) decided, per message."""
        if not use_first_stage:
            return (*await batcher.score(messages), np.ones(len(messages), bool))
        probs, escalate = first_stage.triage(messages)
        scored = await batcher.score([messages[i] for i in escalate]) if len(escalate) else None
        by_model = np.zeros(len(messages), bool)
        by_model[escalate] = True
        return (*merge(probs, escalate, scored), by_model)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = ClassifyRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components["ClassifyRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/healthz")
    async def healthz():
        metrics.requests.labels("/healthz", "200").inc()
        return {"status": "ok", "model_version": classifier.version}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
