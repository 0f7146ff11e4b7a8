"""Forward+backward time of the four contrastive losses, and X-CLR's overhead over SimCLR and CLIP.

    python experiments/bench_losses.py                       # CPU, N in 256 1024 4096
    python experiments/bench_losses.py --device cuda --sizes 256 1024 4096 16384

Times are the median of ``--repeats`` runs after ``--warmup`` runs, in one process, D = 128. The
losses take turns within each repeat, so a slow spell of the machine hits them all alike.
Columns: ``xclr`` is ``xclr_loss`` on a given (N, N) graph; ``xclr_text`` is ``XCLRLoss`` building
that graph inside the step as the cosine of 384-d caption embeddings (all-MiniLM-L6-v2's width).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from xsample.losses import XCLRLoss, clip_loss, simclr_loss, supcon_loss, xclr_loss

TEMPERATURE = 0.1
GRAPH_TEMPERATURE = 0.1
LOGIT_SCALE = 1 / 0.07
NUM_CLASSES = 100


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_closures(size: int, dim: int, device: torch.device, seed: int) -> dict[str, Callable[[], torch.Tensor]]:
    """One zero-argument forward for each loss, on fresh leaf embeddings of ``size`` samples."""
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(size, dim, generator=generator).to(device).requires_grad_()
    z2 = torch.randn(size, dim, generator=generator).to(device).requires_grad_()
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator).to(device)
    captions = torch.randn(size, 384, generator=generator).to(device)
    unit = torch.nn.functional.normalize(captions, dim=1)
    graph = unit @ unit.T
    xclr_module = XCLRLoss(TEMPERATURE, GRAPH_TEMPERATURE)
    return {
        "simclr": lambda: simclr_loss(z1, z2, temperature=TEMPERATURE),
        "supcon": lambda: supcon_loss(z1, z2, labels, temperature=TEMPERATURE),
        "xclr": lambda: xclr_loss(z1, z2, graph, temperature=TEMPERATURE, graph_temperature=GRAPH_TEMPERATURE),
        "xclr_text": lambda: xclr_module(z1, z2, captions),
        "clip": lambda: clip_loss(z1, z2, logit_scale=LOGIT_SCALE),
    }


def time_forward_backward(forwards: dict[str, Callable[[], torch.Tensor]], device: torch.device, warmup: int,
                          repeats: int) -> dict[str, float]:
    """Median milliseconds of forward + backward for each loss, the losses taking turns."""
    timings: dict[str, list[float]] = {name: [] for name in forwards}
    for run in range(warmup + repeats):
        for name, forward in forwards.items():
            _synchronize(device)
            started = time.perf_counter()
            forward().backward()
            _synchronize(device)
            if run >= warmup:
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096], help="batch sizes N")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but no GPU is visible; use --device cpu")

    names = ["simclr", "supcon", "xclr", "xclr_text", "clip"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__} on {name}; D = {args.dim}; median of {args.repeats} runs (ms, forward+backward)")
    ratios = [("xclr", "simclr"), ("xclr", "clip"), ("xclr_text", "simclr")]
    print(f"{'N':>6} " + " ".join(f"{n:>9}" for n in names) + " " + " ".join(f"{a + '/' + b:>16}" for a, b in ratios))
    for size in args.sizes:
        ms = time_forward_backward(loss_closures(size, args.dim, device, args.seed), device, args.warmup, args.repeats)
        print(f"{size:>6} " + " ".join(f"{ms[n]:>9.2f}" for n in names) + " "
              + " ".join(f"{ms[a] / ms[b]:>16.3f}" for a, b in ratios), flush=True)


if __name__ == "__main__":
    main()
