"""`make gpu-check`'s logic in its small mode on the CPU: fixture images with the hard JPEG cases, the
training loop on the batched and PIL paths, the step alone, the input breakdown and the host-sync count."""

from __future__ import annotations

import json

import pytest

from experiments import gpu_check

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_on_the_cpu_and_prints_its_json_line(capsys):
    gpu_check.main(["--small"])  # in this process: the imports are shared with the other tests
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["hard_cases"] == {"progressive": "decoded", "grayscale": "decoded", "cmyk": "decoded",
                                    "png_named_jpeg": "decoded by PIL", "garbage_between_markers": "decoded",
                                    "truncated": "skipped"}
    syncs = result["host_syncs_per_step"]
    assert syncs["steps_probed"] >= 1 and syncs["python_calls"] == 0 and syncs["cuda_syncs"] == 0
    assert all(rate > 0 for rate in result["images_per_s"].values()) and result["training_over_step_alone"] > 0
    assert set(result["ms_per_batch"]) == {"loader_wait", "decode", "augment"}
    assert 0 <= result["data_wait_fraction"] <= 1 and result["input_fraction"] >= 0
    assert (result["per_gpu_batch"], result["image_size"], result["backbone"]) == (16, 32, "resnet_tiny")
