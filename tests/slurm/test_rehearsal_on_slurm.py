"""scale=rehearsal through the real SLURM launcher config (hydra-submitit, srun, gloo on CPU) with 2 tasks
per job: one DDP run against its single-process twin, and the finetune table's base -> finetune dependency."""

from __future__ import annotations

import pytest

from tests.rehearsal_helpers import IMAGES_PER_CLASS, reproduce, run_results
from xsample.data.fixtures import write_fixtures

pytestmark = [pytest.mark.slurm, pytest.mark.rehearsal, pytest.mark.slow]
TWO_TASKS = ["scale.resources.tasks_per_node=2", "scale.resources.cpus_per_task=1"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fixtures")
    write_fixtures(directory, images_per_class=IMAGES_PER_CLASS, image_px=64)
    return directory


def test_two_task_slurm_job_matches_the_single_process_loss_curve(slurm_cluster, fixtures, tmp_path):
    run = ["table=2", "row=augmentation", "seed=0"]
    local = reproduce(fixtures, tmp_path / "local", *run)
    assert local.returncode == 0, local.stdout + local.stderr
    distributed = reproduce(fixtures, tmp_path / "slurm", "-m", *run, *TWO_TASKS, launcher="slurm")
    assert distributed.returncode == 0, distributed.stdout + distributed.stderr
    (single,) = run_results(tmp_path / "local" / "table2_rehearsal").values()
    (ddp,) = run_results(tmp_path / "slurm" / "table2_rehearsal").values()
    assert ddp["status"] == "completed", ddp.get("error")
    assert ddp["hardware"]["world_size"] == 2 and single["hardware"]["world_size"] == 1
    assert ddp["config_hash"] == single["config_hash"]
    assert [s for s, _ in ddp["loss_curve"]] == [s for s, _ in single["loss_curve"]]
    assert [v for _, v in ddp["loss_curve"]] == pytest.approx([v for _, v in single["loss_curve"]], abs=1e-3)


def test_finetune_table_completes_with_two_tasks_per_job(slurm_cluster, fixtures, tmp_path):
    out = reproduce(fixtures, tmp_path, "-m", "table=finetune", *TWO_TASKS, launcher="slurm")
    assert out.returncode == 0, out.stdout + out.stderr
    results = run_results(tmp_path / "tablefinetune_rehearsal")
    # The SimCLR base, then X-CLR, SimCLR and SupCon each continuing it for the same extra epochs (the controls).
    assert {name: r["status"] for name, r in results.items()} == {
        "simclr_imagenet_base_simclr_seed0": "completed", "untrained_imagenet_untrained_seed0": "completed",
        **{f"{method}_imagenet_continued_from_base_seed0": "completed" for method in ("xclr", "simclr", "supcon")}}
    finetuned = results["xclr_imagenet_continued_from_base_seed0"]
    assert finetuned["hardware"]["world_size"] == 2
    assert finetuned["config"]["init_from"]["run_dir"].endswith("simclr_imagenet_base_simclr_seed0")
    assert (tmp_path / "figures" / "rehearsal" / "finetune_rehearsal.md").is_file()
