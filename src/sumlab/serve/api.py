"""The HTTP API: `POST /v1/summarize` on LitServe's dynamic batching over the CTranslate2 engine (serve.engine).

A request is checked in full in LitServe's API process, before it is queued: FastAPI validates the body against
:class:`SummarizeRequest` (types, unknown keys, malformed JSON: 422) and :func:`check` applies the server's limits
(413 / 422). It has to be there: LitServe answers a batch whose ``decode_request`` or ``predict`` raises with
one error for every request in it, so a worker must only ever see requests it can run. The endpoint is a
``LitSpec`` (LitServe's hook for an API of one's own shape, as its OpenAI spec): it queues ``{texts, settings}``
and awaits the worker's answer. The worker (:class:`SummarizeAPI`) takes the requests of a batch, groups their
texts by generation settings (one engine call per group: a request never runs with another's settings) and
answers each request with its own summaries.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
import warnings
from dataclasses import dataclass, field
from queue import Empty
from typing import Any, Optional

import litserve as ls
from fastapi import Header, HTTPException
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.server import RegularRequestHandler
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem
from pydantic import BaseModel, ConfigDict, Field

from sumlab.config.serve import CLIENT_SETTINGS
from sumlab.serve.engine import EngineSpec, Summarizer, settings_of, unsupported

API_PATH = "/v1/summarize"
SETTINGS_PATH = "/v1/settings"
IDLE_WAKE = 1.0  # seconds an idle worker blocks on its queue before LitServe's loop goes round again


class SummarizeRequest(BaseModel):
    """One text or several, and optionally generation settings within the server's limits (GET /v1/settings)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Optional[str] = Field(None, description="one text to summarize (or `texts`)")
    texts: Optional[list[str]] = Field(None, description="several texts; the summaries come back in their order")
    num_beams: Optional[int] = Field(None, description="beams (1: greedy)")
    max_new_tokens: Optional[int] = Field(None, description="summary length limit in tokens")
    min_new_tokens: Optional[int] = Field(None, description="summary minimum length in tokens (greedy only)")
    length_penalty: Optional[float] = Field(None, description="beam search: >1 favours longer summaries")
    no_repeat_ngram_size: Optional[int] = Field(None, description="greedy, seq2seq: no n-gram of this size twice")
    repetition_penalty: Optional[float] = Field(None, description="greedy, seq2seq: >1 discourages repeats")


class Timing(BaseModel):
    total_seconds: float = Field(description="from the request's arrival to its answer, queueing included")
    generate_seconds: float = Field(description="the engine calls of the batch the request ran in")
    batch_texts: int = Field(description="texts in that batch, this request's and others'")


class SummarizeResponse(BaseModel):
    summary: Optional[str] = Field(description="the summary of `text` (null for `texts`)")
    summaries: list[str] = Field(description="one per text, in order")
    settings: dict[str, Any] = Field(description="the generation settings used")
    timing: Timing


def _reject(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def check(body: SummarizeRequest, limits: dict[str, Any], spec: EngineSpec) -> tuple[list[str], dict[str, Any]]:
    """The texts and the full generation settings of a valid request; HTTPException 413/422 naming the problem."""
    if (body.text is None) == (body.texts is None):
        raise _reject(422, "give `text` (one text) or `texts` (a list), not both or neither")
    texts = [body.text] if body.text is not None else body.texts
    if not texts:
        raise _reject(422, "`texts` is empty: give at least one text")
    if len(texts) > limits["max_texts"]:
        raise _reject(413, f"{len(texts)} texts: this server takes at most {limits['max_texts']} per request")
    for i, text in enumerate(texts):
        where = "`text`" if body.text is not None else f"texts[{i}]"
        if len(text) > limits["max_chars"]:
            raise _reject(413, f"{where} has {len(text)} characters: this server takes at most {limits['max_chars']}")
        if not text.strip():
            raise _reject(422, f"{where} is empty: nothing to summarize")
    changes = {k: getattr(body, k) for k in CLIENT_SETTINGS if getattr(body, k) is not None}
    for key, value in changes.items():
        low, high = limits[key]
        if not low <= value <= high:
            raise _reject(422, f"{key}={value} is outside this server's limits [{low}, {high}]")
    settings = settings_of(spec, changes)
    reason = unsupported(spec, settings)
    if reason is not None:
        raise _reject(422, f"{reason}: change the setting")
    return texts, settings


class SummarizeEndpoint(LitSpec):
    """`POST /v1/summarize` and `GET /v1/settings` (runs in LitServe's API process; see the module docstring)."""

    def __init__(self, engine: EngineSpec, limits: dict[str, Any]) -> None:
        super().__init__()
        self.api_path = API_PATH
        self.engine, self.limits = engine, limits
        self.add_endpoint(API_PATH, self.summarize, ["POST"])
        self.add_endpoint(SETTINGS_PATH, self.settings, ["GET"])

    def decode_request(self, request: Any, context_kwargs: Optional[dict] = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Optional[dict] = None) -> Any:
        return output

    async def summarize(self, body: SummarizeRequest) -> SummarizeResponse:
        """Summarize `text` or `texts`; requests arriving together are batched (dynamic batching)."""
        arrived = time.perf_counter()
        texts, settings = check(body, self.limits, self.engine)
        answer = await self.submit(texts, settings)
        timing = Timing(total_seconds=round(time.perf_counter() - arrived, 4), batch_texts=answer["batch_texts"],
                        generate_seconds=round(answer["generate_seconds"], 4))  # fmt: skip
        summaries = answer["summaries"]
        return SummarizeResponse(summary=summaries[0] if body.text is not None else None, summaries=summaries,
                                 settings={k: settings[k] for k in CLIENT_SETTINGS}, timing=timing)  # fmt: skip

    async def settings(self) -> dict[str, Any]:
        """The default generation settings, and the limits of what a request may change and send."""
        return {"defaults": {k: self.engine.defaults[k] for k in CLIENT_SETTINGS}, "limits": self.limits}

    async def submit(self, texts: list[str], settings: dict[str, Any]) -> dict[str, Any]:
        """Queue checked texts for the workers and await the answer (the entry is dropped even if the client is
        gone: the worker's batch never waits on a client)."""
        uid = uuid.uuid4().hex
        self.response_buffer[uid] = ResponseBufferItem(event=asyncio.Event())
        try:
            self.request_queue.put(
                (self.response_queue_id, uid, time.monotonic(), {"texts": texts, "settings": settings})
            )
            await self.response_buffer[uid].event.wait()
            response, status = self.response_buffer[uid].response
        finally:
            self.response_buffer.pop(uid, None)
        if status == LitAPIStatus.ERROR:
            RegularRequestHandler._handle_error_response(response)  # LitServe's: its HTTPException, else 500
        return response


@dataclass
class Batch:
    """A batch's texts grouped by settings: each group's (request, text) positions."""

    texts: list[list[str]]  # per request
    groups: dict[str, tuple[dict[str, Any], list[tuple[int, int]]]] = field(default_factory=dict)


class CollectLoop(BatchedLoop):
    """LitServe's batched loop, collecting a batch another way: block until a request arrives, take the requests
    queued behind it (up to max_batch_size), and wait for more only `batch_timeout` seconds after the first.

    Why not LitServe's ``collate_requests``: its queue is a ``multiprocessing.Manager`` proxy (each call a round trip
    to the manager process), and it polls it every millisecond even while idle, opens the batch_timeout window
    before any request has arrived (a lone request waits half of it on average), and with ``batch_timeout=0`` spins
    without pause; on a few CPU cores that is time taken from the engine. It also sends a START message per request
    (through the same manager) that only streaming uses."""

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        payloads: list[tuple] = []
        timed_out: list[tuple] = []
        wait, deadline = IDLE_WAKE, 0.0
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            try:
                item = request_queue.get(timeout=wait) if wait > 0 else request_queue.get_nowait()
            except Empty:
                break
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, queued_at, x = item
            if time.monotonic() - queued_at > lit_api.request_timeout:  # answered 504 by LitServe's loop
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, x))
            if len(payloads) + len(timed_out) == 1:
                deadline = time.monotonic() + lit_api.batch_timeout
            wait = deadline - time.monotonic()
        return payloads, timed_out


class SummarizeAPI(ls.LitAPI):
    """The worker side: one :class:`Summarizer` per worker process, on the device LitServe gives it."""

    def __init__(self, engine: EngineSpec, limits: dict[str, Any], threads: int, api_key: Optional[str],
                 max_batch_size: int, batch_timeout: float) -> None:  # fmt: skip
        with warnings.catch_warnings():  # max_batch_size=1 is a choice here: predict() then takes a lone request
            warnings.filterwarnings("ignore", message=".*both batch and unbatch methods implemented.*")
            super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                             spec=SummarizeEndpoint(engine, limits),
                             loop=CollectLoop() if max_batch_size > 1 else "auto")  # fmt: skip
        self.engine, self.threads, self.api_key = engine, threads, api_key

    def setup(self, device: str) -> None:
        self.summarizer = Summarizer(self.engine, device, self.threads)

    def authorize(self, x_api_key: Optional[str] = Header(None), authorization: Optional[str] = Header(None)) -> None:
        """LitServe's auth hook (a FastAPI dependency of every route it adds): the key from serve.api_key_env."""
        if not self.api_key:
            return
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), self.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header `X-API-Key: <key>`",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return request  # checked by the endpoint before it was queued

    def batch(self, inputs: list[dict[str, Any]]) -> Batch:
        batch = Batch(texts=[r["texts"] for r in inputs])
        for i, request in enumerate(inputs):
            key = json.dumps(request["settings"], sort_keys=True)
            group = batch.groups.setdefault(key, (request["settings"], []))
            group[1].extend((i, j) for j in range(len(request["texts"])))
        return batch

    def predict(self, x: Batch | dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
        if not isinstance(x, Batch):  # max_batch_size=1: LitServe hands over one request, unbatched
            return self.unbatch(self.predict(self.batch([x])))[0]
        summaries: list[list[Optional[str]]] = [[None] * len(t) for t in x.texts]
        seconds = 0.0
        for settings, slots in x.groups.values():
            out, took = self.summarizer.summarize([x.texts[i][j] for i, j in slots], settings)
            seconds += took
            for (i, j), summary in zip(slots, out, strict=True):
                summaries[i][j] = summary
        total = sum(len(t) for t in x.texts)
        return [{"summaries": s, "generate_seconds": seconds, "batch_texts": total} for s in summaries]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output
