"""Regenerate every table in miniature, with the rows its known-answer checks compare, and time each table.

    python experiments/preview.py                        # every table: paper_figures/preview/tiny (make preview)
    python experiments/preview.py --tables 1 --out paper_figures/tiny     # Table 1 alone (make demo)
    python experiments/preview.py --runs-in-flight 1     # one run at a time, every core each

Each table runs as a user would run it, as one launch: `reproduce.py -m table=T scale=tiny`, with
`extra_sweeps=true` where the table has `table.extra_sweeps.tiny` (configs/table/T.yaml: the sanity and
extra-seed rows its checks need), so that its grid and those sweeps share the runs in flight. Runs
already completed are not run again, so an interrupted preview continues where it stopped. The report of
every table is rendered into ``--out`` with ``timings.md``: each table's wall time and the training speed
of its runs (images/s, so that a slower or busier machine can be told apart from a slower harness).
The runs of a sweep train two at a time by default (launcher=local runs_in_flight=2, one thread each on 2
cores): that is how the committed preview was made, and a run's numbers depend on its thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

from analysis.catalog import tables  # noqa: E402
from analysis.report import check_outcome_lines  # noqa: E402
from experiments.launch import usable_cores  # noqa: E402
from experiments.plan import TABLES  # noqa: E402

SCALE = "tiny"


def _section(table: str) -> dict:
    """The ``table`` section of configs/table/<table>.yaml (read once, by analysis.catalog)."""
    return next(section for section in tables().values() if section["file"] == table)


def extra_sweeps(table: str) -> list[list[str]]:
    """The overrides of each sweep the table adds at tiny scale beyond its own grid."""
    return [sweep.split() for sweep in (_section(table).get("extra_sweeps") or {}).get(SCALE) or []]


def _table_id(table: str) -> str:
    return str(_section(table)["id"])


def _sweep_dir(sweeps: Path, table: str) -> Path:
    """Where reproduce.py writes the table's runs (configs/reproduce.yaml hydra.sweep.dir)."""
    return sweeps / f"table{_table_id(table)}_{SCALE}"


def training_speed(sweep_dir: Path) -> str:
    """Median images/s of the table's trained runs (timing.images_per_s in their result.json)."""
    speeds = []
    for result in sweep_dir.glob("runs/*/result.json"):
        record = json.loads(result.read_text())
        if record.get("status") == "completed" and (record.get("timing") or {}).get("steps"):
            speeds.append(float(record["timing"]["images_per_s"]))
    return f"{statistics.median(speeds):.0f}" if speeds else "–"


TIMINGS_HEADER = ["| table | sweeps | wall time | training images/s of one run (median over its runs; runs in flight "
                  "share the cores) | made on |", "|---|---|---|---|---|"]


def write_timings(path: Path, rows: dict[str, str], load_at_start: float, runs_in_flight: int) -> list[str]:
    """Write (or update: tables not run this time keep their rows) ``timings.md``; return its table."""
    kept = {}
    if path.exists():
        for line in path.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] in TABLES:
                kept[cells[0]] = line
    made = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {runs_in_flight} run(s) in flight, "
            f"load {load_at_start:.1f} → {os.getloadavg()[0]:.1f}")
    kept.update({table: f"{row} {made} |" for table, row in rows.items()})
    table = TIMINGS_HEADER + [kept[name] for name in TABLES if name in kept]
    path.write_text("\n".join(["# Wall time per table", "",
                                "Each row: `python experiments/preview.py --tables T` on this machine; load = the "
                                "1-minute load average at the start and at the end of that run (2 cores: above 2 "
                                "means something else was running).", "", *table]) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=TABLES)
    parser.add_argument("--out", type=Path, default=REPO / "paper_figures" / "preview" / SCALE)
    parser.add_argument("--sweeps", type=Path, default=REPO / os.environ.get("XSAMPLE_SWEEPS", "sweeps"),
                        help="where the runs are written (paths.sweeps)")
    parser.add_argument("--runs-in-flight", type=int, default=min(2, usable_cores()),
                        help="runs trained at once, each with cores/N threads (launcher=local runs_in_flight); "
                             "default 2, or 1 on one core")
    args = parser.parse_args(argv)
    args.out, args.sweeps = args.out.resolve(), args.sweeps.resolve()
    load_at_start = os.getloadavg()[0]
    rows: dict[str, str] = {}
    failed = []
    for table in args.tables:
        started = time.monotonic()
        sweeps = 1 + len(extra_sweeps(table))
        # One launch per table: its grid and extra sweeps share the runs in flight and one report.
        command = [sys.executable, str(REPO / "experiments" / "reproduce.py"), "-m", f"table={table}",
                   f"scale={SCALE}", *(["extra_sweeps=true"] if sweeps > 1 else []), f"paths.sweeps={args.sweeps}",
                   f"paths.figures={args.out.parent}", f"runs_in_flight={args.runs_in_flight}"]
        print("$ " + " ".join(command[1:]), flush=True)
        if subprocess.run(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode != 0:
            failed.append(" ".join(command[3:]))
        minutes, seconds = divmod(round(time.monotonic() - started), 60)
        rows[table] = (f"| {table} | {sweeps} | {minutes} min {seconds:02d} s | "
                       f"{training_speed(_sweep_dir(args.sweeps, table))} |")
        # Written after every table: a preview stopped part-way keeps the times of the tables it finished.
        args.out.mkdir(parents=True, exist_ok=True)
        timings = write_timings(args.out / "timings.md", rows, load_at_start, args.runs_in_flight)
    print("\n".join(timings))
    for table in args.tables:  # the verdicts last: where each table is, and whether its checks pass
        for line in check_outcome_lines(_sweep_dir(args.sweeps, table), _table_id(table), SCALE, args.out):
            print(f"xsample: {line}")
    if failed:
        print(f"xsample: {len(failed)} launch(es) did not complete: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
