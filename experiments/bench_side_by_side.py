"""Local sweep wall time: runs one after another (runs_in_flight=1, every core each) against N at once
(runs_in_flight=N, cores/N threads each), the same sweep through reproduce.py, one arm after the other.

    python experiments/bench_side_by_side.py                      # Table 1's analog, 4 seeds of SupCon, 3 epochs
    python experiments/bench_side_by_side.py --seeds 6 --epochs 8 --runs-in-flight 2

Each arm plans, trains, evaluates and reports in a fresh sweeps directory, so start-up, planning and the
evaluation are counted as a user pays them. Prints each arm's wall time, its runs' median images/s and
linear-probe top-1, and the ratio; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(sweeps: Path, runs_in_flight: int, seeds: int, epochs: int) -> dict:
    command = [sys.executable, str(REPO / "experiments" / "reproduce.py"), "-m", "table=1", "scale=tiny",
               "method=supcon", f"seed={','.join(str(seed) for seed in range(seeds))}", f"scale.epochs={epochs}",
               "launcher=local", f"runs_in_flight={runs_in_flight}", f"paths.sweeps={sweeps}",
               f"paths.figures={sweeps / 'figures'}"]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - started
    records = [json.loads(path.read_text()) for path in sweeps.glob("table1_tiny/runs/*/result.json")]
    trained = [record for record in records if (record.get("timing") or {}).get("steps")]
    return {"runs_in_flight": runs_in_flight, "wall_s": round(seconds, 1), "runs": len(trained),
            "cpu_threads": sorted({record["hardware"]["cpu_threads"] for record in trained}),
            "median_images_per_s": round(statistics.median(record["timing"]["images_per_s"] for record in trained)),
            "top1": [round(record["metrics"]["imagenet"]["top1"], 2) for record in
                     sorted(trained, key=lambda record: record["experiment"]["seed"])]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs-in-flight", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"{len(os.sched_getaffinity(0))} cores; SupCon on the Table 1 analog, {args.seeds} seeds, {args.epochs} epochs",
          flush=True)
    arms = []
    with tempfile.TemporaryDirectory() as scratch:
        for runs_in_flight in (1, args.runs_in_flight):
            arm = sweep(Path(scratch) / f"in_flight_{runs_in_flight}", runs_in_flight, args.seeds, args.epochs)
            print(f"runs_in_flight={runs_in_flight}: {arm['wall_s']} s, {arm['runs']} runs at {arm['cpu_threads']} "
                  f"thread(s), median {arm['median_images_per_s']} images/s, top-1 {arm['top1']}", flush=True)
            arms.append(arm)
    ratio = arms[0]["wall_s"] / arms[1]["wall_s"]
    print(f"runs_in_flight={args.runs_in_flight} ends the sweep {ratio:.2f}x sooner than one run at a time")
    print(json.dumps({"arms": arms, "speedup": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
