"""Schema of `python serve.py` (conf/serve.yaml); the field comments document each key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from sumlab.config.predict import PredictModelConfig
from sumlab.config.schema import GenerationConfig, PathsConfig

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds: this machine only, or every IPv4 / IPv6 interface
ACCELERATORS = ("auto", "cpu", "cuda")
# Generation settings a client may change per request, each within serve.limits.<name> = [lowest, highest].
CLIENT_SETTINGS = ("num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "no_repeat_ngram_size",
                   "repetition_penalty")  # fmt: skip


@dataclass
class ServeLimits:
    """What one request may ask for; a text over max_chars or more than max_texts texts: 413, a setting out of
    its [lowest, highest] range: 422."""

    max_texts: int = 32  # texts per request
    max_chars: int = 20000  # characters per text (a DialogSum dialogue is about 1,000)
    num_beams: list[int] = field(default_factory=lambda: [1, 8])
    max_new_tokens: list[int] = field(default_factory=lambda: [1, 256])
    min_new_tokens: list[int] = field(default_factory=lambda: [0, 64])
    length_penalty: list[float] = field(default_factory=lambda: [0.0, 3.0])
    no_repeat_ngram_size: list[int] = field(default_factory=lambda: [0, 6])
    repetition_penalty: list[float] = field(default_factory=lambda: [1.0, 2.0])


@dataclass
class ServeConfig:
    task_name: str = "serve"
    # a sumlab run dir, its export/, a .ckpt of a run, a local HF dir or a hub name; null: the Explore tab alone
    model_dir: Optional[str] = None
    # 127.0.0.1: this machine only; 0.0.0.0 or :: (every interface) only when you mean it (set an API key)
    host: str = "127.0.0.1"
    port: int = 8000  # 1024-65535
    # the environment variable holding the API key (clients send `X-API-Key: <key>` or `Authorization: Bearer
    # <key>`); unset or empty variable: no key. The key itself never goes in a config.
    api_key_env: Optional[str] = "SUMLAB_API_KEY"
    max_batch_size: int = 16  # requests one engine call may take together (LitServe's dynamic batching); 1: none
    # seconds a batch waits for more requests after its first arrived; 0: none, it takes the requests already
    # queued (under load, those that arrived while the engine ran: bench-serve measured 0 faster than 0.01 s at 16
    # clients and twice as fast for a lone request)
    batch_timeout: float = 0.0
    # the workers' answers over ZeroMQ (LitServe's fast_queue) instead of a multiprocessing.Manager queue (a round
    # trip to the manager process and a thread hop per answer); false: LitServe's default
    fast_queue: bool = True
    request_timeout: float = 120.0  # seconds a request may wait for its batch, else 504
    # seconds a stop (SIGTERM) waits for the requests in flight; an open page's event stream counts as one, and is
    # cut after this
    shutdown_timeout: float = 30.0
    accelerator: str = "auto"  # auto (cuda if there is one, else cpu), cpu or cuda
    devices: Any = "auto"  # cuda: number of GPUs, a list of ids, or auto (all); cpu: one device
    # engines (processes) per device; on CPU each gets cores // workers_per_device threads
    workers_per_device: int = 1
    # CTranslate2's: auto (float32 on CPU: outputs equal predict.py's; bfloat16/float16 on a GPU), int8, ...
    compute_type: str = "auto"
    engine_batch_size: int = 32  # texts per CTranslate2 sub-batch (it sorts a call's texts by length into them)
    # source tokens kept (causal: the dialogue's start is cut); null: the training run's data.max_source_length,
    # else 512
    max_source_length: Optional[int] = None
    limits: ServeLimits = field(default_factory=ServeLimits)
    ui: bool = True  # the web page at / (Summarize with a model, Explore always); false: the API alone
    # the Explore tab reads runs and predictions under these directories only
    roots: list[str] = field(default_factory=lambda: ["${paths.output_dir}", "${paths.sweep_dir}"])
    model: PredictModelConfig = field(default_factory=PredictModelConfig)  # prompts as the run had them (predict's)
    generation: GenerationConfig = MISSING  # the default settings (a request may change CLIENT_SETTINGS)
    paths: PathsConfig = MISSING
