"""Command line: `python -m analysis report SWEEP_DIR [--out DIR] [--paper-version v2]` and
`python -m analysis status SWEEP_DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.catalog import scales
from analysis.reported import PAPER_VERSIONS, ReportedNumbersError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write tables (md, tex, csv) and figures: reproduced vs reported")
    report.add_argument("sweep_dir", type=Path)
    report.add_argument("--out", type=Path, default=None,
                        help="output folder (default: paper_figures/<scale>/ under the working directory)")
    report.add_argument("--paper-version", choices=PAPER_VERSIONS, default="v2",
                        help="which version's reported numbers to compare with (default: v2)")
    report.add_argument("--reported", type=Path, default=None, help="reported-numbers YAML (default: the packaged one)")
    report.add_argument("--scale", choices=scales(), default=None,
                        help="only runs of this scale (default: every scale found)")
    status = commands.add_parser("status", help="per-run status and progress of a sweep")
    status.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)

    if not args.sweep_dir.is_dir():
        print(f"analysis: sweep directory {args.sweep_dir} does not exist", file=sys.stderr)
        return 2
    # Imported here so that `--help` and argument errors stay fast (pandas, matplotlib).
    from analysis.collect import READABLE_STATUSES, collect_runs

    runs = collect_runs(args.sweep_dir)
    readable = runs["status"].isin(READABLE_STATUSES).any()
    if args.command == "status":
        from analysis.status import status_text

        print(status_text(args.sweep_dir, runs))
        return 0 if readable else 1
    from analysis.report import write_report
    from analysis.reported import DEFAULT_FILE

    try:
        written = write_report(args.sweep_dir, args.out, args.paper_version, args.reported or DEFAULT_FILE,
                               scale=args.scale, runs=runs)
    except ReportedNumbersError as error:
        print(f"analysis: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if not readable:
        print(f"analysis: no readable result.json under {args.sweep_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
