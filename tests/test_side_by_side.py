"""Several local runs at once (launcher=local runs_in_flight=N): each in a process of its own with an equal,
fixed share of the cores, fine-tuning runs after their base, and a signal passed on to every run in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.launch import (
    RUN_ENDED,
    SweepInterrupted,
    interrupted_exit_code,
    run_side_by_side,
    threads_per_run,
    usable_cores,
)
from tests.engine_helpers import REPO
from tests.test_command_line import FEW_STEPS

# A stand-in for a side-by-side worker: for each run directory read on stdin it notes when the run starts and
# ends (sleeping as long as the run's name says), then prints the end line; SIGTERM stops it (status 143).
FAKE_WORKER = """
import signal, sys, time
from pathlib import Path
log, ended = sys.argv[1], sys.argv[2]
def stop(signum, frame):
    open(log, "a").write(f"stopped {name} {time.monotonic()}\\n"); sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
for line in sys.stdin:
    name, seconds = Path(line.strip()).name.split("-")
    open(log, "a").write(f"start {name} {time.monotonic()}\\n")
    print(f"hello from {name}", flush=True)
    time.sleep(float(seconds))
    open(log, "a").write(f"end {name} {time.monotonic()}\\n")
    print(f"{ended} {line.strip()}", flush=True)
"""


def _fake_worker(log: Path):
    return lambda threads: [sys.executable, "-c", FAKE_WORKER, str(log), RUN_ENDED]


def _fake_runs(tmp_path: Path, names: list[str], base_of: dict[str, str] | None = None) -> list[SimpleNamespace]:
    """Runs named name-seconds (how long the fake worker takes for each); those named untrained* train nothing."""
    runs = {name: SimpleNamespace(name=name.split("-")[0], run_dir=tmp_path / name, base=None,
                                  config={"method": {"name": "untrained" if name.startswith("untrained") else "simclr"}})
            for name in names}
    for name, base in (base_of or {}).items():
        runs[name].base = runs[base]
    return list(runs.values())


def _events(log: Path) -> list[tuple[str, str, float]]:
    return [(kind, name, float(when)) for kind, name, when in (line.split() for line in log.read_text().splitlines())]


def test_at_most_n_runs_at_once_and_a_fine_tune_starts_after_its_base(tmp_path):
    log, lines = tmp_path / "events", []
    runs = _fake_runs(tmp_path, ["base-1.5", "a-0.3", "b-0.3", "tuned-0.3"], base_of={"tuned-0.3": "base-1.5"})
    run_side_by_side(runs, 2, log=lines.append, command=_fake_worker(log))
    events = _events(log)
    assert sorted(name for kind, name, _ in events if kind == "end") == ["a", "b", "base", "tuned"]
    in_flight, most = 0, 0
    for kind, _, _ in sorted(events, key=lambda event: event[2]):
        in_flight += 1 if kind == "start" else -1
        most = max(most, in_flight)
    assert most == 2
    when = {(kind, name): moment for kind, name, moment in events}
    assert when[("start", "tuned")] > when[("end", "base")]
    assert when[("start", "a")] < when[("end", "base")]  # the other rows did not wait for the base
    assert sorted(lines) == sorted(f"{name}: hello from {name}" for name in ("a", "b", "base", "tuned"))


def test_runs_that_train_nothing_start_after_every_trained_run(tmp_path):
    log = tmp_path / "events"
    runs = _fake_runs(tmp_path, ["a-0.1", "untrained-0.1", "b-0.1", "c-0.1"])
    # One slot: its worker runs them one after another in the order handed out (with two, which worker
    # logs its start first would be a race).
    run_side_by_side(runs, 1, log=lambda line: None, command=_fake_worker(log))
    assert [name for kind, name, _ in _events(log) if kind == "start"] == ["a", "b", "c", "untrained"]


def test_a_signal_reaches_every_run_in_flight_once_and_no_further_run_starts(tmp_path):
    log = tmp_path / "events"
    runs = _fake_runs(tmp_path, ["a-60", "b-60", "c-60"])

    def stop_when_two_started() -> None:
        while not log.exists() or log.read_text().count("start") < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_two_started, daemon=True).start()
    with pytest.raises(SweepInterrupted, match="stopped by SIGTERM; passed on to the 2 run") as stopped:
        run_side_by_side(runs, 2, log=lambda line: None, command=_fake_worker(log))
    assert interrupted_exit_code(stopped.value) == 143
    assert sorted((kind, name) for kind, name, _ in _events(log)) == [("start", "a"), ("start", "b"),
                                                                      ("stopped", "a"), ("stopped", "b")]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_each_run_in_flight_gets_an_equal_share_of_the_cores():
    cores = usable_cores()
    assert threads_per_run(1) == cores
    assert threads_per_run(cores) == 1
    assert threads_per_run(cores + 1) == 1


@pytest.mark.parametrize("args, message", [
    (["launcher=slurm", "runs_in_flight=2", "plan=true"], "runs_in_flight is a setting of launcher=local (this command "
                                                          "launches slurm: chosen); drop it, or add launcher=local"),
    (["launcher=local", "runs_in_flight=0"], "runs_in_flight=0 must be a whole number from 1 to"),
    (["launcher=local", "runs_in_flight=two"], "runs_in_flight=two must be a whole number from 1 to"),
])
def test_runs_in_flight_that_cannot_act_is_refused_in_one_line_before_planning(tmp_path, capsys, args, message):
    from experiments import reproduce

    with pytest.raises(SystemExit) as refused:
        reproduce.main(["-m", "table=2", "scale=tiny", *args, f"paths.sweeps={tmp_path}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert refused.value.code == 1 and len(lines) == 1 and message in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.long
def test_two_runs_train_side_by_side_stop_on_sigterm_and_resume(tmp_path):
    """End to end: two seeds at once, one thread each on 2 cores; SIGTERM to reproduce.py checkpoints both,
    the same command resumes and completes them."""
    command = [sys.executable, str(REPO / "experiments" / "reproduce.py"), "-m", "table=2", "row=augmentation",
               "seed=0,1", "launcher=local", "runs_in_flight=2", f"paths.sweeps={tmp_path}",
               f"paths.cache={tmp_path / 'cache'}", f"paths.figures={tmp_path / 'figures'}",
               "scale.checkpoint_every_steps=1", *FEW_STEPS]
    # 36 steps: the run that started first must still be training when the later one has checkpointed twice
    # and the signal lands (with 9 steps, on a faster host, it had finished by then).
    command = [argument.replace("scale.epochs=1", "scale.epochs=12") for argument in command]
    started = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def checkpoints() -> list[int]:
        steps = []
        for path in tmp_path.glob("table2_tiny/runs/*/result.json"):
            try:
                steps.append(json.loads(path.read_text()).get("checkpoint_step") or 0)
            except ValueError:  # being replaced
                steps.append(0)
        return steps

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (len(checkpoints()) == 2 and min(checkpoints()) >= 2):
        time.sleep(0.2)
    started.send_signal(signal.SIGTERM)
    output = started.communicate(timeout=120)[0]
    assert started.returncode == 143 and "Traceback" not in output, output
    assert "xsample: interrupted: stopped by SIGTERM; passed on to the 2 run(s) in flight" in output, output
    records = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("table2_tiny/runs/*/result.json"))]
    assert [record["status"] for record in records] == ["interrupted", "interrupted"], output
    assert all(record["error"].startswith("stopped by SIGTERM; checkpoint saved at step") for record in records)

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("table2_tiny/runs/*/result.json"))]
    assert [record["status"] for record in records] == ["completed", "completed"]
    assert all(record["resumed_from"] >= 2 for record in records)
    assert {record["hardware"]["cpu_threads"] for record in records} == {threads_per_run(2)}
