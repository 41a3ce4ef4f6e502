"""serve.py's run: check the config, prepare the engine, then LitServe (the API and the page) until SIGTERM.

Processes (LitServe's): this one loads and converts the model once (serve.engine.prepare), then starts one
worker per device x ``workers_per_device`` (spawned; each loads the converted model) and one API process
(forked; FastAPI under uvicorn, with the page mounted at /). One API process, not one per worker: the page's
Gradio queue keeps a browser session's state in the process that serves it.

SIGTERM (or Ctrl+C) stops it gracefully: the API process stops accepting connections and finishes the requests
in flight (uvicorn waits up to ``shutdown_timeout``; an open page's event stream is one), then the workers stop;
exit status 0. Send it to this process only: a signal to the whole process group also stops the workers before
they answer.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from sumlab.config.rules import check_generation
from sumlab.config.serve import ACCELERATORS, CLIENT_SETTINGS, HOSTS
from sumlab.core.errors import SumlabError, guarded
from sumlab.core.runtime import quiet_library_logs

LOG_LEVEL = "warning"  # uvicorn's per-request lines off; start-up and stop lines are printed here


@guarded
def run(cfg: DictConfig) -> None:
    validate(cfg)
    quiet_library_logs()
    check_port(str(cfg.host), int(cfg.port))
    api_key = read_api_key(cfg)
    roots = [str(Path(r).expanduser()) for r in cfg.roots]
    if cfg.model_dir is None:
        serve_explore(cfg, roots, api_key)
        return
    from sumlab.serve.engine import prepare

    print(f"serve: loading {cfg.model_dir}", flush=True)
    engine = prepare(cfg)
    server = build_server(cfg, engine, api_key)
    if cfg.ui:
        from sumlab.serve.page import mount_page

        mount_page(server.app, server.lit_api.spec, roots, api_key)
    seconds = engine.conversion_seconds
    converted = f"converted in {seconds:.2f} s" if seconds else f"converted earlier: {engine.path}"
    announce(server.app, f"serve: {engine.source} on CTranslate2 {engine.compute_type} ({converted}); "
                         f"{workers(cfg, engine)}; {urls(cfg)}")  # fmt: skip
    serve_until_stopped(server, cfg)


def validate(cfg: DictConfig) -> None:
    if cfg.host not in HOSTS:
        raise SumlabError(f"host={cfg.host} cannot be bound: use 127.0.0.1 (this machine), 0.0.0.0 or :: (every one)")
    if not 1024 <= cfg.port <= 65535:
        raise SumlabError(f"port={cfg.port} must be in 1024-65535")
    for key in ("max_batch_size", "workers_per_device", "engine_batch_size"):
        if cfg[key] < 1:
            raise SumlabError(f"{key}={cfg[key]} must be at least 1")
    if cfg.batch_timeout < 0 or cfg.request_timeout <= cfg.batch_timeout:
        raise SumlabError(f"batch_timeout={cfg.batch_timeout} must be >= 0 and below request_timeout")
    if cfg.shutdown_timeout < 0:
        raise SumlabError(f"shutdown_timeout={cfg.shutdown_timeout} must be >= 0")
    if cfg.accelerator not in ACCELERATORS:
        raise SumlabError(f"accelerator={cfg.accelerator} is unknown: use one of {list(ACCELERATORS)}")
    from sumlab.generation.engines import COMPUTE_TYPES

    if cfg.compute_type not in COMPUTE_TYPES:
        raise SumlabError(f"compute_type={cfg.compute_type} is unknown: use one of {list(COMPUTE_TYPES)}")
    check_limits(cfg.limits)
    check_generation(cfg.generation)
    if cfg.model_dir is None and not cfg.ui:
        raise SumlabError("model_dir is null and ui=false: nothing to serve; pass model_dir=... or ui=true")
    if cfg.ui and not cfg.roots:
        raise SumlabError("roots=[] leaves the Explore tab nothing to read: pass roots=[outputs, multirun]")


def check_limits(limits: DictConfig) -> None:
    if limits.max_texts < 1 or limits.max_chars < 1:
        raise SumlabError("limits.max_texts and limits.max_chars must be at least 1")
    for key in CLIENT_SETTINGS:
        bounds = list(limits[key])
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise SumlabError(f"limits.{key}={bounds} must be [lowest, highest]")


def check_port(host: str, port: int) -> None:
    """Fail before loading a model when the port is taken (LitServe would find out after starting its workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as ex:
            raise SumlabError(f"port={port} on {host} is not free ({ex.strerror}): pass port=<another>") from None


def read_api_key(cfg: DictConfig) -> Optional[str]:
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if not key and cfg.host != "127.0.0.1":
        print(f"serve: warning: host={cfg.host} takes requests from other machines and no API key is set "
              f"(export {cfg.api_key_env or 'SUMLAB_API_KEY'}=<key>)", file=sys.stderr, flush=True)  # fmt: skip
    return key or None


def urls(cfg: DictConfig) -> str:
    base = f"http://{'[::1]' if cfg.host == '::' else '127.0.0.1' if cfg.host == '0.0.0.0' else cfg.host}:{cfg.port}"
    api = "" if cfg.model_dir is None else f"API {base}/v1/summarize, docs {base}/docs"
    page = f"page {base}/" if cfg.ui else ""
    return ", ".join(p for p in (page, api) if p)


def workers(cfg: DictConfig, engine: Any) -> str:
    if engine.device == "cpu":
        return f"{cfg.workers_per_device} worker(s) on CPU, {cpu_threads(cfg)} threads each"
    return f"{cfg.workers_per_device} worker(s) per GPU (devices={cfg.devices})"


def cpu_threads(cfg: DictConfig) -> int:
    """CPU threads per worker: this process's cores shared between the workers."""
    return max(1, len(os.sched_getaffinity(0)) // int(cfg.workers_per_device))


def build_server(cfg: DictConfig, engine: Any, api_key: Optional[str]) -> Any:
    import litserve as ls

    from sumlab.serve.api import SummarizeAPI

    limits = OmegaConf.to_container(cfg.limits, resolve=True)
    api = SummarizeAPI(engine, limits, cpu_threads(cfg), api_key, int(cfg.max_batch_size), float(cfg.batch_timeout))
    # A body larger than its texts could be at 4 UTF-8 bytes a character is refused before it is parsed (413).
    payload = limits["max_texts"] * limits["max_chars"] * 4 + 65536
    devices = OmegaConf.to_container(cfg.devices) if OmegaConf.is_config(cfg.devices) else cfg.devices  # a list
    server = ls.LitServer(api, accelerator=engine.device, devices=devices, timeout=float(cfg.request_timeout),
                          workers_per_device=int(cfg.workers_per_device), max_payload_size=payload,
                          fast_queue=bool(cfg.fast_queue))  # fmt: skip
    server.uvicorn_graceful_timeout = float(cfg.shutdown_timeout)  # LitServe's (30 s), no argument of its own
    return server


def announce(app: Any, line: str) -> None:
    """Print `line` once the API process has started (after the workers loaded their engines)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with inner(a) as state:
            print(line, flush=True)
            yield state

    app.router.lifespan_context = lifespan


def serve_until_stopped(server: Any, cfg: DictConfig) -> None:
    owner = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # the forked API process: uvicorn re-raises the signal once it has shut down
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        signal.signal(signum, signal.SIG_IGN)  # one stop is enough
        raise KeyboardInterrupt  # LitServe's graceful path: the API process drains, then the workers stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(host=str(cfg.host), port=int(cfg.port), num_api_servers=1, generate_client_file=False,
                   log_level=LOG_LEVEL)  # fmt: skip
    except KeyboardInterrupt:  # stopped while the workers were starting: LitServe's shutdown did not run
        for worker in getattr(server, "inference_workers", []):
            worker.terminate()
    except RuntimeError as ex:  # LitServe: "One or more workers failed to start" (their log says why)
        raise SumlabError(f"{ex}: see the worker's log above") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("serve: stopped", flush=True)


def serve_explore(cfg: DictConfig, roots: list[str], api_key: Optional[str]) -> None:
    """No model: the Explore tab alone, on plain FastAPI + uvicorn (nothing for LitServe's workers to do)."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from sumlab.serve.page import mount_page

    app = FastAPI(title="sumlab explore")
    app.add_api_route("/health", lambda: PlainTextResponse("ok"), methods=["GET"])
    mount_page(app, None, roots, api_key)
    announce(app, f"serve: Explore over {', '.join(roots)}; {urls(cfg)}")
    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it found: a no-op
    # here, so a stop exits 0 as with a model.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(uvicorn.Config(app, host=str(cfg.host), port=int(cfg.port), log_level=LOG_LEVEL,
                                      timeout_graceful_shutdown=float(cfg.shutdown_timeout))).run()  # fmt: skip
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("serve: stopped", flush=True)
