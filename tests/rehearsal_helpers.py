"""Running reproduce.py at scale=rehearsal on the miniature paper datasets (shared by the local and SLURM tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES_PER_CLASS = 8  # 80 ImageNet train images: batch 16 reads every file in an epoch


def fixture_roots(directory: Path) -> dict[str, str]:
    """The XSAMPLE_*_ROOT variables DIR/env.sh exports."""
    exports = [line.removeprefix("export ").split("=", 1) for line in (directory / "env.sh").read_text().splitlines()
               if line.startswith("export ")]
    return dict(exports)


def reproduce(fixtures: Path, sweeps: Path, *overrides: str, launcher: str = "local",
              timeout_s: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, **fixture_roots(fixtures), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "experiments/reproduce.py", *overrides, "scale=rehearsal",
                           f"launcher={launcher}", f"paths.sweeps={sweeps}", f"paths.cache={sweeps / 'cache'}",
                           f"paths.figures={sweeps / 'figures'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)


def run_results(sweep: Path) -> dict[str, dict]:
    """result.json of every run of one sweep directory, by run name."""
    return {run.name: json.loads((run / "result.json").read_text()) for run in sorted((sweep / "runs").iterdir())}
