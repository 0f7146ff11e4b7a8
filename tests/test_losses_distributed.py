"""Two gloo processes on CPU give the single-process loss and, after DDP-style averaging, its gradients.

Each rank holds half of a global batch and a copy of the same small projector (and CLIP logit
scale). The loss modules gather columns with gradient; averaging the per-rank losses and
parameter gradients over ranks (what logging and DDP do) must reproduce the single-process
module on the concatenated batch, for all four losses.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xsample.losses import ClipLoss, SimCLRLoss, SupConLoss, XCLRLoss

WORLD_SIZE = 2
GLOBAL_BATCH = 12
INPUT_DIM, EMBED_DIM, CAPTION_DIM = 10, 6, 5


def _global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "view1": torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator, dtype=torch.float64),
        "view2": torch.randn(GLOBAL_BATCH, INPUT_DIM, generator=generator, dtype=torch.float64),
        # Few classes, so positives cross the rank boundary.
        "label": torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator),
        "caption": torch.randn(GLOBAL_BATCH, CAPTION_DIM, generator=generator, dtype=torch.float64),
    }


def _projector() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(INPUT_DIM, EMBED_DIM).double()


CASES = {
    "simclr": lambda: SimCLRLoss(0.2),
    "supcon": lambda: SupConLoss(0.2),
    "xclr": lambda: XCLRLoss(0.2, 0.1),
    "xclr_keep_self": lambda: XCLRLoss(0.2, 0.1, mask_self=False),
    "clip": ClipLoss,
}


def _loss_and_grads(name: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss of ``batch`` and gradients of the projector (and the CLIP logit scale)."""
    projector = _projector()
    criterion = CASES[name]()
    z1, z2 = projector(batch["view1"]), projector(batch["view2"])
    parameters = list(projector.parameters())
    if name == "clip":
        log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        parameters.append(log_scale)
        loss = criterion(z1, z2, log_scale.exp())
    elif name == "simclr":
        loss = criterion(z1, z2)
    elif name == "supcon":
        loss = criterion(z1, z2, batch["label"])
    else:
        loss = criterion(z1, z2, batch["caption"])
    return loss.detach(), list(torch.autograd.grad(loss, parameters))


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        share = GLOBAL_BATCH // WORLD_SIZE
        local = {key: value[rank * share:(rank + 1) * share] for key, value in _global_batch().items()}
        results = {}
        for name in CASES:
            loss, grads = _loss_and_grads(name, local)
            dist.all_reduce(loss)
            for grad in grads:
                dist.all_reduce(grad)  # DDP's gradient averaging, written out
            results[name] = (loss / WORLD_SIZE, [grad / WORLD_SIZE for grad in grads])
        # Unequal local batches must fail on every rank with a clear message, not hang or mis-align.
        uneven = torch.randn(3 + rank, EMBED_DIM)
        try:
            SimCLRLoss(0.2)(uneven, uneven)
            results["uneven_error"] = ""
        except ValueError as error:
            results["uneven_error"] = str(error)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_single_process(rank_results, name):
    expected_loss, expected_grads = _loss_and_grads(name, _global_batch())
    for results in rank_results:
        loss, grads = results[name]
        torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-12)
        assert len(grads) == len(expected_grads)
        for grad, expected in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_uneven_local_batches_are_rejected(rank_results):
    for results in rank_results:
        assert "same local batch size on every rank, got [3, 4]" in results["uneven_error"]
        assert "drop_last=True" in results["uneven_error"]
