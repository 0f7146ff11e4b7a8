"""Hostile environments (issue 14): stale caption caches, dead runs, full disks and unwritable
directories, the umask, run-lock waits and config values that must be refused up front."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

import xsample.io
from analysis.__main__ import main as analysis_cli
from analysis.reported import ReportedNumbersError, load_all
from tests.engine_helpers import small_run_config, typed_run_config
from xsample.config import RunConfigError, TextGraph
from xsample.data import build_dataset
from xsample.graph import CacheMismatchError, CaptionEmbeddingCache, cache_directory, dataset_identity
from xsample.graph.__main__ import main as graph_cli
from xsample.graph.cache import MANIFEST_NAME
from xsample.io import DiskFullError, atomic_torch_save, atomic_write_json
from xsample.locks import exclusive_lock
from xsample.rundir.checkpoint import save_checkpoint
from xsample.rundir.heartbeat import new_heartbeat, staleness
from xsample.rundir.result import ResultWriter, ResultWriterError
from xsample.train.distributed import DistInfo
from xsample.train.run import run_experiment
from xsample.train.side_information import caption_cache

REPO = Path(__file__).resolve().parents[1]


# ---- 1. caption caches keyed by content ---------------------------------------------------------
def _graph_build(cache_root: Path, *extra: str) -> int:
    return graph_cli(["build", "--dataset", "shapes", "--option", "size=3k", "--encoder", "bag_of_words",
                      "--cache-root", str(cache_root), *extra])


def test_test_split_gets_its_own_cache_not_the_train_one(tmp_path, capsys):
    assert _graph_build(tmp_path) == 0
    assert "3000 x 512 float16" in capsys.readouterr().out
    assert _graph_build(tmp_path, "--split", "test") == 0
    assert "2000 x 512 float16" in capsys.readouterr().out
    assert len(list(tmp_path.iterdir())) == 2


def test_training_reuses_the_cache_the_cli_built(tmp_path, capsys, monkeypatch):
    assert _graph_build(tmp_path) == 0
    built = capsys.readouterr().out.split()[1].rstrip(":")

    def no_encoding(name):
        raise AssertionError("training re-encoded captions the CLI had cached")

    monkeypatch.setattr("xsample.graph.cache.load_text_encoder", no_encoding)
    # Training's config spells out the default caption_noise=0.0; the CLI left it out.
    base = typed_run_config("table='3'", "row=xclr", "dataset=cc3m")
    config = dataclasses.replace(
        base, graph=TextGraph(source="captions", encoder="bag_of_words", template="{}"),
        paths=dataclasses.replace(base.paths, cache=str(tmp_path)),
        data=dataclasses.replace(base.data, name="shapes", root=None, options={"size": "3k", "caption_noise": 0.0}))
    dataset = build_dataset("shapes", "train", size="3k", caption_noise=0.0)
    cache = caption_cache(config, dataset)
    assert str(cache.directory) == built and len(cache) == 3000


def test_other_captions_get_another_cache(tmp_path):
    clean = build_dataset("shapes", "train", size="3k")
    noisy = build_dataset("shapes", "train", size="3k", caption_noise=0.5)
    common = {"cache_root": tmp_path, "encoder_name": "bag_of_words", "name": "shapes", "split": "train",
              "progress": False}
    first = CaptionEmbeddingCache.for_dataset(clean, options={"size": "3k"}, **common)
    second = CaptionEmbeddingCache.for_dataset(noisy, options={"size": "3k", "caption_noise": 0.5}, **common)
    assert first.directory != second.directory


def _caption_shard(path: Path, captions: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        for position, caption in enumerate(captions):
            data = caption.encode()
            info = tarfile.TarInfo(f"{path.stem}{position:04d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.with_name(f"{path.stem}_stats.json").write_text(json.dumps({"successes": len(captions)}))


def test_another_shard_set_is_another_cc3m_dataset(tmp_path):
    root = tmp_path / "cc3m"
    root.mkdir()
    _caption_shard(root / "00000.tar", ["a red circle", "a blue star"])
    first = dataset_identity(build_dataset("cc3m", "train", root=root), name="cc3m", split="train", root=root)
    _caption_shard(root / "00001.tar", ["a green square"])
    second = dataset_identity(build_dataset("cc3m", "train", root=root), name="cc3m", split="train", root=root)
    assert (first["count"], second["count"]) == (2, 3) and first["fingerprint"] != second["fingerprint"]
    assert cache_directory(tmp_path, first, "bag_of_words", "{}") != cache_directory(tmp_path, second, "bag_of_words", "{}")


def test_a_cache_whose_rows_are_not_the_datasets_is_refused(tmp_path):
    dataset = build_dataset("shapes", "test", size="3k")
    common = {"cache_root": tmp_path, "encoder_name": "bag_of_words", "name": "shapes", "split": "test",
              "options": {"size": "3k"}, "progress": False}
    cache = CaptionEmbeddingCache.for_dataset(dataset, **common)
    manifest = json.loads((cache.directory / MANIFEST_NAME).read_text())
    manifest["dataset"]["fingerprint"] = "0" * 64
    (cache.directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CacheMismatchError, match="fingerprint .* is not the dataset's.*Delete that directory"):
        CaptionEmbeddingCache.for_dataset(dataset, **common)
    (cache.directory / "embeddings.f16").write_bytes(b"\0" * 10)
    with pytest.raises(CacheMismatchError, match="has 10 bytes"):
        CaptionEmbeddingCache.for_dataset(dataset, **common)


# ---- 2. dead runs ----------------------------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc).isoformat(timespec="seconds")


def _running_result(run_dir: Path, pid: int, seconds_ago: float, seed: int) -> None:
    heartbeat = {**new_heartbeat(), "pid": pid, "pid_start_ticks": None, "slurm_job_id": None,
                 "last_update": _iso(seconds_ago), "log_interval_s": 5.0}
    atomic_write_json(run_dir / "result.json", {
        "status": "running", "heartbeat": heartbeat, "metrics": {},
        "experiment": {"table": "1", "scale": "tiny", "layout": "metrics", "comparability": "miniature",
                       "method": "simclr", "dataset": "imagenet", "seed": seed}})


def test_killed_run_is_reported_stale_live_and_recent_ones_running(tmp_path, capsys):
    _running_result(tmp_path / "runs" / "dead", _dead_pid(), seconds_ago=600, seed=0)
    _running_result(tmp_path / "runs" / "alive", os.getpid(), seconds_ago=600, seed=1)
    _running_result(tmp_path / "runs" / "recent", _dead_pid(), seconds_ago=5, seed=2)
    assert analysis_cli(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    line_of = {name: next(line for line in lines if f"runs/{name} " in line) for name in ("dead", "alive", "recent")}
    assert line_of["dead"].startswith("stale") and "no heartbeat for 10 min" in line_of["dead"]
    assert "is gone" in line_of["dead"]
    assert line_of["alive"].startswith("running") and line_of["recent"].startswith("running")
    assert any(line.startswith("stale: 1 run(s)") for line in lines)


def test_report_lists_stale_runs_even_with_nothing_completed(tmp_path, capsys):
    _running_result(tmp_path / "table1_tiny" / "runs" / "dead", _dead_pid(), seconds_ago=600, seed=0)
    assert analysis_cli(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "table1_tiny.md").read_text()
    assert "stale 1" in markdown and "- stale: `table1_tiny/runs/dead`: no heartbeat for 10 min" in markdown


def test_stale_needs_the_slurm_job_gone(monkeypatch):
    heartbeat = {"host": "node-7", "pid": 4242, "slurm_job_id": "991", "last_update": _iso(3600), "log_interval_s": 30}
    monkeypatch.setattr("xsample.rundir.heartbeat._slurm_job_state", lambda job: "RUNNING")
    assert staleness(heartbeat) is None
    monkeypatch.setattr("xsample.rundir.heartbeat._slurm_job_state", lambda job: "")
    assert "SLURM job 991 is gone" in staleness(heartbeat)
    monkeypatch.setattr("xsample.rundir.heartbeat._slurm_job_state", lambda job: None)
    assert staleness(heartbeat) is None, "another host and no SLURM: cannot tell, so not stale"


def test_result_json_carries_a_heartbeat_refreshed_at_log_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    writer = ResultWriter(tmp_path, typed_run_config("table='1'", "method=simclr"), DistInfo(0, 1, 0, torch.device("cpu")))
    writer.update()
    writer.log_step(10)
    time.sleep(0.01)
    writer.log_step(20)
    heartbeat = json.loads((tmp_path / "result.json").read_text())["heartbeat"]
    assert heartbeat["host"] == socket.gethostname() and heartbeat["pid"] == os.getpid()
    assert (heartbeat["slurm_job_id"], heartbeat["slurm_array_job_id"], heartbeat["slurm_array_task_id"]) == ("1234", "1200", "3")
    assert heartbeat["step"] == 20 and heartbeat["log_interval_s"] > 0
    assert datetime.fromisoformat(heartbeat["last_update"]) >= datetime.fromisoformat(heartbeat["started_at"])


# ---- 3. full disk, unwritable directories, orphaned temp files --------------------------------------
def test_checkpoint_on_a_full_disk_names_the_device_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(xsample.io, "free_bytes", lambda path: 10**6)
    with pytest.raises(DiskFullError, match=r"no space left on .* for checkpoint \(0\.0\d GB needed, 0\.00 GB free\)"):
        save_checkpoint(tmp_path, {"model": {"weight": torch.zeros(4_000_000)}})
    assert list(tmp_path.iterdir()) == []


def test_torch_running_out_of_space_midway_is_named(tmp_path, monkeypatch):
    def full(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(xsample.io, "free_bytes", lambda path: 0)
    with pytest.raises(DiskFullError, match=r"no space left on .*0\.00 GB free.* while writing .*checkpoint\.pt"):
        atomic_torch_save({}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == [], "the partial temp file is removed"


def _failing_config(seed=0) -> dict:
    # A graph_stats run (no training) on a dataset nobody registered fails at once, after result.json says "running".
    config = small_run_config("table=fig5", "row=fig5_class_names", f"seed={seed}")
    config["data"]["name"] = "unregistered"
    return config


def test_orphaned_checkpoint_temp_files_are_removed_on_the_next_start(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(ValueError, match="unknown dataset 'unregistered'"):
        run_experiment(_failing_config(), run_dir)
    assert not list(run_dir.glob("*.tmp"))
    assert "removed 1 partial file(s)" in capsys.readouterr().out


def test_a_failure_result_json_cannot_record_is_named(tmp_path, monkeypatch):
    writes = []

    def second_write_fails(path, obj):
        writes.append(obj["status"])
        if len(writes) > 1:
            raise xsample.io.WriteError(13, f"cannot write {path}: Permission denied")
        atomic_write_json(path, obj)

    monkeypatch.setattr("xsample.rundir.result.atomic_write_json", second_write_fails)
    with pytest.raises(ResultWriterError, match="result.json could not record it: .*Permission denied"):
        run_experiment(_failing_config(), tmp_path / "run")


def test_one_runs_io_failure_fails_that_run_not_the_sweep(tmp_path, monkeypatch):
    from xsample.rundir import lifecycle

    lines = []
    (tmp_path / "runs").write_text("a file where the runs directory should be")
    outcome = lifecycle.execute_run(_failing_config(), tmp_path / "runs" / "a", log=lines.append)
    assert outcome.status == "failed" and "cannot write its run directory" in lines[-1]

    monkeypatch.setattr(lifecycle, "run_experiment", lambda config, run_dir: (_ for _ in ()).throw(
        xsample.io.WriteError(13, f"cannot write {run_dir}/result.json: Permission denied")))
    outcome = lifecycle.execute_run(_failing_config(), tmp_path / "ok" / "b", log=lines.append)
    assert outcome.status == "failed"
    assert "Permission denied" in lines[-1] and "result.json could not record it" in lines[-1] and "see " not in lines[-1]


# ---- 4. umask ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        atomic_torch_save({"a": 1}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(previous)
    for name in ("result.json", "checkpoint.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


# ---- 6. smaller items ----------------------------------------------------------------------------------
def test_non_finite_and_non_integer_values_are_refused_before_running(tmp_path):
    from experiments.plan import plan_sweep

    plan = plan_sweep(["launcher=local", "table='1'", "method=simclr", "method.temperature=nan",
                       "scale.optim.lars.lr=inf", "seed=1.5"], multirun=False)
    assert plan.problems == ["method.temperature must be > 0, got nan",
                             "scale.optim.lars.lr=inf is not a finite number; give a finite value",
                             "seed must be an integer, got 1.5; e.g. seed=1"]
    config = small_run_config("table='1'", "method=simclr")
    config["optim"]["lr"] = float("inf")
    with pytest.raises(RunConfigError, match=r"^run config key optim.lr is inf, not a finite number: give a finite value$"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_reproduce_refuses_nan_in_one_line(capsys):
    from experiments import reproduce

    with pytest.raises(SystemExit) as refused:
        reproduce.main(["table=1", "scale.optim.lars.lr=nan", "launcher=plan"])
    assert refused.value.code != 0
    assert "xsample: scale.optim.lars.lr=nan is not a finite number; give a finite value" in capsys.readouterr().err


def _reported_file(tmp_path: Path, **changes) -> Path:
    entry = {"id": "t1", "table": "1", "kind": "absolute", "row": "simclr", "dataset": "imagenet",
             "column": "imagenet.top1", "value": 63.4, "paper_version": "v2", "source": "test", **changes}
    path = tmp_path / f"reported_{len(list(tmp_path.glob('reported_*')))}.yaml"
    path.write_text(json.dumps({"entries": [entry]}))
    return path


def test_reported_numbers_schema_is_strict(tmp_path, capsys):
    assert len(load_all(_reported_file(tmp_path))) == 1
    misspelled = _reported_file(tmp_path, valeu=63.4)
    with pytest.raises(ReportedNumbersError, match=r"entry 0 \(t1\): field 'valeu' is not a known field"):
        load_all(misspelled)
    with pytest.raises(ReportedNumbersError, match=r"entry 0 \(t1\): field 'column' names unknown metric 'imagenet.top_1'"):
        load_all(_reported_file(tmp_path, column="imagenet.top_1"))
    (tmp_path / "sweep").mkdir()
    assert analysis_cli(["report", str(tmp_path / "sweep"), "--reported", str(misspelled)]) == 2
    assert "valeu" in capsys.readouterr().err


def test_waiting_for_a_held_lock_names_the_holder(tmp_path):
    messages, acquired = [], threading.Event()

    def second_command():
        with exclusive_lock(tmp_path, what="run", announce=messages.append):
            acquired.set()

    with exclusive_lock(tmp_path, what="run"):
        waiter = threading.Thread(target=second_command)
        waiter.start()
        deadline = time.monotonic() + 10
        while not messages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not acquired.is_set()
    waiter.join(10)
    assert acquired.is_set()
    assert len(messages) == 1
    assert messages == [f"xsample: waiting for the run lock held by PID {os.getpid()} on {socket.gethostname()}: {tmp_path}"]
