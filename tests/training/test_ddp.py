"""Two CPU processes with real torch.distributed (gloo): the ranks stay identical and the run finishes."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from training.config import preset
        from training.data import prepare_dataset
        from training.loop import DistInfo, Trainer

        cfg = preset("tiny", resolution=16, z_dim=32, w_dim=32, channel_base=512, channel_max=64, batch=8,
                     kimg=0.032, pl_weight=2.0, pl_interval=2, r1_interval=2, metric_num=0, tick_kimg=0.016,
                     snap_kimg=0.016, sample_kimg=1.0)
        trainer = Trainer(cfg, prepare_dataset("synthetic:32", 16), out, dist_info=DistInfo(rank, world),
                          progress=False)
        assert trainer.batch_gpu == 4
        result = trainer.run()
        torch.save({"status": result.status, "step": result.step,
                    "G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "G_ema": trainer.G_ema.state_dict()},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the two-process run did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["status"] == r1["status"] == "done" and r0["step"] == r1["step"] == 4
    for key in ("G", "D", "G_ema"):
        for name, t in r0[key].items():
            assert torch.equal(t, r1[key][name]), (key, name)
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in lines] == [0.016, 0.032]  # written once (rank 0), global batch of 8
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["gen"], state["rng"][1]["gen"])  # ranks draw different latents
