"""Two single-process "nodes" on the loopback interface, launched by torchrun as on a cluster: the run
finishes, only global rank 0 writes sumlab's outputs, and validation ROUGE equals one process's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RUN, compose_config
from test_train import _load_best, _validate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_torchrun_loopback(tmp_path: Path) -> None:
    port = _free_port()
    overrides = [*TINY_RUN, "data.eval_batch_size=2", "trainer.strategy=ddp", "trainer.num_nodes=2",
                 "trainer.devices=1", "trainer.accelerator=cpu"]  # fmt: skip
    nodes = []
    for rank in (0, 1):  # each node its own run directory, as on machines without a shared disk
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
               "--master-addr=127.0.0.1", f"--master-port={port}", "train.py", *overrides,
               f"hydra.run.dir={tmp_path / f'node{rank}'}"]  # fmt: skip
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    metrics = json.loads((node0 / "metrics.json").read_text())
    assert json.loads((node0 / "run.json").read_text())["status"] == "completed"
    assert (node0 / "export" / "config.json").is_file() and (node0 / "checkpoints" / "last.ckpt").is_file()
    assert metrics["global_step"] == 4  # 64 examples, batch 8, two ranks: 4 steps each
    # rank 1 wrote none of sumlab's outputs (Hydra's own .hydra/ and log are per process)
    assert not any((node1 / name).exists() for name in ("run.json", "metrics.json", "checkpoints", "export"))

    cfg = compose_config(overrides[:-4], run_dir=tmp_path / "single")
    module, datamodule = _load_best(cfg, node0)
    single = _validate(module, datamodule)
    assert single["num_examples"] == metrics["validation"]["num_examples"] == 9
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined", "gen_len"):
        assert single[key] == pytest.approx(metrics["validation"][key], abs=1e-9), key
    assert single["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-6)  # node 1's repeat not counted
