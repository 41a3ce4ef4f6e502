"""serve.py as a client uses it: a real server process on 127.0.0.1, a real HTTP client (httpx).

Concurrent requests each get their own summary, equal to predict.py's for the same text and settings (requests
with different settings batched together included); every bad request gets a JSON error and a 4xx; the API key;
a client that disconnects; SIGTERM with a request in flight. The model: the tiny T5 run test_predict.py trains.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import assert_one_line_error, compose_config, run_cli
from omegaconf import OmegaConf
from serve_process import Server, free_port
from test_predict import make_run

from sumlab.predict.writer import read_predictions

N_TEXTS = 12
BATCH_TIMEOUT = 0.3  # long enough that concurrent requests share a batch on a loaded machine


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve-t5"), "t5")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from sumlab.data import synthetic

    return [r["dialogue"] for r in synthetic.generate_split("test", N_TEXTS, 42)]


@pytest.fixture(scope="module")
def server(t5_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = Server(tmp_path_factory.mktemp("serve-log"), f"model_dir={t5_run}", f"batch_timeout={BATCH_TIMEOUT}")
    yield srv
    srv.stop()


def predict_py(t5_run: Path, texts: list[str], out: Path, *overrides: str) -> list[str]:
    """predict.py (in this process) on `texts`: its summaries in order."""
    from sumlab.predict.runner import run

    out.mkdir(parents=True)
    source = out / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "dialogue": t}) + "\n" for i, t in enumerate(texts)))
    run(compose_config([f"model_dir={t5_run}", "data=files", f"data.test_file={source}", *overrides,
                        "trainer.enable_progress_bar=false", f"output.dir={out}", f"paths.run_dir={out}"],
                       config_name="predict"))  # fmt: skip
    return [r["prediction"] for r in read_predictions(out)]


def post(server: Server, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/summarize", json=body, timeout=60, **kwargs)


# --- configuration ---------------------------------------------------------------------------------
def test_serve_config_composes_with_defaults(tmp_path: Path) -> None:
    cfg = compose_config(["model_dir=some/run"], config_name="serve", run_dir=tmp_path)
    assert cfg.host == "127.0.0.1" and cfg.api_key_env == "SUMLAB_API_KEY"
    assert cfg.generation.num_beams == 4  # the beam4 group, as predict.py's default
    roots = OmegaConf.to_container(cfg.roots, resolve=True)
    assert roots == [cfg.paths.output_dir, cfg.paths.sweep_dir]
    assert compose_config([], config_name="serve", run_dir=tmp_path).model_dir is None  # the Explore tab alone


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["host=10.1.2.3"], "host=10.1.2.3"),
        (["limits.num_beams=[4,1]"], "limits.num_beams"),
        (["model_dir=null", "ui=false"], "nothing to serve"),
        (["model_dir=/nonexistent/run"], "no such file or directory"),
        (["batch_timeout=-1"], "batch_timeout=-1.0 must be >= 0"),
        (["fast_queue=maybe"], "fast_queue=maybe"),
    ],
)
def test_bad_config_is_one_line(overrides: list[str], needle: str) -> None:
    assert_one_line_error(run_cli("serve.py", f"port={free_port()}", *overrides, timeout=300), needle)


@pytest.mark.slow
def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(run_cli("serve.py", f"port={port}", "model_dir=/nonexistent", timeout=300), "not free")


# --- batching, without a server ----------------------------------------------------------------------
class EchoSummarizer:
    """Stands in for the engine: answers `<num_beams>:<text>` and records each engine call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def summarize(self, texts: list[str], settings: dict) -> tuple[list[str], float]:
        self.calls.append((texts, settings["num_beams"]))
        return [f"{settings['num_beams']}:{t}" for t in texts], 0.01


def echo_api(max_batch_size: int, batch_timeout: float = 0.0) -> Any:
    """The worker side without a model: the engine is an EchoSummarizer."""
    from sumlab.serve.api import SummarizeAPI
    from sumlab.serve.engine import EngineSpec

    spec = EngineSpec(path="", compute_type="float32", device="cpu", tokenizer=None, family="seq2seq", prefix="",
                      separator="", chat=None, token_ids={}, defaults={}, max_source_length=512, engine_batch_size=32,
                      source="", conversion_seconds=0.0)  # fmt: skip
    api = SummarizeAPI(spec, {}, 1, None, max_batch_size, batch_timeout)
    api.summarizer = EchoSummarizer()
    return api


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_a_batch_runs_one_engine_call_per_settings_and_answers_each_request(max_batch_size: int) -> None:
    api = echo_api(max_batch_size)
    beams = lambda n: {"num_beams": n, "max_new_tokens": 8}  # noqa: E731
    requests = [{"texts": ["a", "b"], "settings": beams(4)}, {"texts": ["c"], "settings": beams(1)},
                {"texts": ["d"], "settings": beams(4)}]  # fmt: skip
    if max_batch_size == 1:  # LitServe hands predict() one request, without batch/unbatch
        answers = [api.predict(r) for r in requests]
        assert len(api.summarizer.calls) == 3
    else:
        answers = api.unbatch(api.predict(api.batch(requests)))
        assert sorted(api.summarizer.calls) == [(["a", "b", "d"], 4), (["c"], 1)]  # grouped, each with its settings
        assert {a["batch_texts"] for a in answers} == {4}
    assert [a["summaries"] for a in answers] == [["4:a", "4:b"], ["1:c"], ["4:d"]]


def test_a_worker_takes_the_queued_requests_then_waits_batch_timeout_after_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve.api.CollectLoop on a plain queue (LitServe's is a Manager proxy with the same get/get_nowait)."""
    import threading
    from queue import Queue

    from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

    from sumlab.serve import api as serve_api

    monkeypatch.setattr(serve_api, "IDLE_WAKE", 0.05)
    queue: Queue = Queue()
    request = lambda uid, age=0.0: (0, uid, time.monotonic() - age, {"texts": [uid]})  # noqa: E731

    def collect(max_batch_size: int, batch_timeout: float) -> tuple[list[str], list[str]]:
        api = echo_api(max_batch_size, batch_timeout)
        api.request_timeout = 60.0  # LitServer sets it
        assert isinstance(api.loop, serve_api.CollectLoop)
        payloads, late = api.loop.get_batch_requests(api, queue, None)
        return [p[1] for p in payloads], [t[1] for t in late]

    assert collect(4, 0.0) == ([], [])  # idle: back to LitServe's loop after IDLE_WAKE, nothing lost
    for uid in "abcde":
        queue.put(request(uid))
    queue.put(request("old", age=61))
    assert collect(4, 0.0) == (["a", "b", "c", "d"], [])  # what is queued, up to max_batch_size, in order
    assert collect(4, 0.0) == (["e"], ["old"])  # a request past request_timeout is returned apart (504)
    later = threading.Timer(1.0, queue.put, [request("late")])
    later.start()
    queue.put(request("f"))
    assert collect(4, 0.0) == (["f"], [])  # batch_timeout 0: no wait for a request that is not queued yet
    later.join()
    queue.put(request("g"))
    later = threading.Timer(0.1, queue.put, [request("h")])
    later.start()
    started = time.monotonic()
    # batch_timeout 30 s: a request 0.1 s after the first joins its batch, which runs once full, not after 30 s
    assert collect(3, 30.0) == (["late", "g", "h"], [])
    assert time.monotonic() - started < 15
    queue.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        collect(4, 0.0)


# --- the API ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_health_docs_and_settings(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").text == "ok"
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/summarize" in schema["paths"] and "SummarizeRequest" in schema["components"]["schemas"]
    settings = httpx.get(f"{server.url}/v1/settings").json()
    assert settings["defaults"]["num_beams"] == 4 and settings["limits"]["num_beams"] == [1, 8]


@pytest.mark.slow
def test_concurrent_requests_get_their_own_summaries_equal_to_predict(
    server: Server, t5_run: Path, texts: list[str], tmp_path: Path
) -> None:
    beam = predict_py(t5_run, texts, tmp_path / "beam4")
    greedy = predict_py(t5_run, texts, tmp_path / "greedy", "generation.num_beams=1")
    # Outputs that differ between texts and between settings, or a mix-up could not show.
    assert len(set(beam)) > 2 and beam != greedy

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            bodies = [{"text": t, **({"num_beams": 1} if i % 2 else {})} for i, t in enumerate(texts)]
            return await asyncio.gather(*(client.post(f"{server.url}/v1/summarize", json=b) for b in bodies))

    answers = [r.json() for r in asyncio.run(send_all())]
    expected = [greedy[i] if i % 2 else beam[i] for i in range(len(texts))]
    assert [a["summary"] for a in answers] == expected
    assert [a["settings"]["num_beams"] for a in answers] == [1 if i % 2 else 4 for i in range(len(texts))]
    assert max(a["timing"]["batch_texts"] for a in answers) > 1  # dynamic batching put requests together
    assert all(a["timing"]["total_seconds"] >= a["timing"]["generate_seconds"] > 0 for a in answers)

    many = post(server, {"texts": texts}).json()
    assert many["summaries"] == beam and many["summary"] is None


LONG = "x" * 20001  # limits.max_chars is 20000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b'{"text": "unclosed', 422, "JSON decode error"),
        (b'["a list"]', 422, "valid dictionary"),
        (json.dumps({"text": 3}).encode(), 422, "valid string"),
        (json.dumps({"text": "hi", "num_beams": "4"}).encode(), 422, "valid integer"),
        (json.dumps({"text": "hi", "beams": 4}).encode(), 422, "Extra inputs"),
        (json.dumps({"texts": []}).encode(), 422, "`texts` is empty"),
        (json.dumps({"text": " \n "}).encode(), 422, "`text` is empty"),
        (json.dumps({"text": "a", "texts": ["b"]}).encode(), 422, "not both"),
        (json.dumps({}).encode(), 422, "neither"),
        (json.dumps({"texts": ["hi"] * 33}).encode(), 413, "at most 32"),
        (json.dumps({"texts": ["hi", LONG]}).encode(), 413, "texts[1] has 20001 characters"),
        (json.dumps({"text": "x" * 3_000_000}).encode(), 413, "Payload too large"),
        (json.dumps({"text": "hi", "num_beams": 9}).encode(), 422, "num_beams=9 is outside this server's limits"),
        (json.dumps({"text": "hi", "length_penalty": -1}).encode(), 422, "length_penalty=-1"),
        (json.dumps({"text": "hi", "min_new_tokens": 9, "max_new_tokens": 5}).encode(), 422, "exceeds"),
        (json.dumps({"text": "hi", "no_repeat_ngram_size": 3}).encode(), 422, "with beam search"),
    ],
)
def test_bad_request_gets_json_error(server: Server, content: bytes, status: int, needle: str) -> None:
    res = httpx.post(f"{server.url}/v1/summarize", content=content, headers={"Content-Type": "application/json"},
                     timeout=60)  # fmt: skip
    assert res.status_code == status, res.text[:500]
    assert needle in json.dumps(res.json()["detail"]), res.text[:500]
    assert "Traceback" not in res.text


@pytest.mark.slow
def test_client_that_disconnects_does_not_stall_the_batch(server: Server, texts: list[str]) -> None:
    body = json.dumps({"texts": texts, "num_beams": 8, "max_new_tokens": 256}).encode()
    for _ in range(3):  # clients that send a request and hang up at once
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /v1/summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    started = time.monotonic()
    answer = post(server, {"text": texts[0]})
    assert answer.status_code == 200 and answer.json()["summary"]
    assert time.monotonic() - started < 60
    assert httpx.get(f"{server.url}/health").text == "ok"


# --- a server with an API key, two workers, one request per engine call: the key, then SIGTERM in flight --
@pytest.mark.slow
def test_api_key_and_sigterm_finishes_the_requests_in_flight(t5_run: Path, texts: list[str], tmp_path: Path) -> None:
    key = {"X-API-Key": "s3cret"}
    srv = Server(tmp_path, f"model_dir={t5_run}", "max_batch_size=1", "workers_per_device=2", "ui=false",
                 env={"SUMLAB_API_KEY": "s3cret"}, headers=key)  # fmt: skip
    try:
        threads = max(1, len(os.sched_getaffinity(0)) // 2)
        assert f"2 worker(s) on CPU, {threads} threads each" in srv.output()  # the cores shared between them
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            res = post(srv, {"text": texts[0]}, headers=headers)
            assert res.status_code == 401 and "API key" in res.json()["detail"]
        assert post(srv, {"text": texts[0]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200

        # Eight heavy requests, one per engine call: when the first is answered, the others are still in flight.
        heavy = {"texts": texts * 2, "num_beams": 8, "max_new_tokens": 256}

        async def stop_while_busy() -> tuple[list[httpx.Response], int]:
            async with httpx.AsyncClient(timeout=120) as client:
                sent = [asyncio.ensure_future(client.post(f"{srv.url}/v1/summarize", json=heavy, headers=key))
                        for _ in range(8)]  # fmt: skip
                await asyncio.wait(sent, return_when=asyncio.FIRST_COMPLETED)
                srv.process.send_signal(signal.SIGTERM)  # to the main process, as a process manager sends it
                pending = sum(not request.done() for request in sent)
                return await asyncio.gather(*sent), pending

        responses, pending = asyncio.run(stop_while_busy())
        assert pending > 0
        assert all(r.status_code == 200 and len(r.json()["summaries"]) == len(heavy["texts"]) for r in responses)
        assert srv.process.wait(90) == 0
        assert "serve: stopped" in srv.output() and "Traceback" not in srv.output()
    finally:
        srv.stop()
