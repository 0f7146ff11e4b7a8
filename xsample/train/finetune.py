"""Starting a run from another run's backbone (the fine-tuning experiment)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xsample.config import RunConfig
from xsample.rundir.checkpoint import CHECKPOINT_NAME, load_checkpoint
from xsample.rundir.result import read_result

BACKBONE_PREFIX = "backbone."


def load_initial_weights(model: nn.Module, config: RunConfig, run_dir: Path) -> bool:
    """Copy the base run's backbone into ``model`` before the first step; a run that already has its
    own checkpoint resumes from that instead. Returns whether weights were copied."""
    source = config.init_from
    if source is None or (Path(run_dir) / CHECKPOINT_NAME).exists():
        return False
    base_dir = Path(source.run_dir)
    # A base run still training (or failed) has a checkpoint too: only its final weights are a start.
    base_result = read_result(base_dir) or {}
    if base_result.get("status") != "completed" or base_result.get("config_hash") != source.config_hash:
        raise FileNotFoundError(
            f"init_from run {base_dir} has not completed with config hash {source.config_hash} (its result.json "
            f"says {base_result.get('status') or 'nothing'}); complete the base run first (experiments/reproduce.py "
            "launches a table's base rows before the rows that fine-tune them)")
    state = load_checkpoint(base_dir, source.config_hash)
    if state is None:
        raise FileNotFoundError(
            f"init_from run {base_dir} has no {CHECKPOINT_NAME}; train the base run first "
            "(experiments/reproduce.py launches a table's base rows before the rows that fine-tune them)"
        )
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state["model"].items() if k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise ValueError(f"{base_dir / CHECKPOINT_NAME} holds no '{BACKBONE_PREFIX}*' weights to start from")
    with torch.no_grad():
        model.backbone.load_state_dict(backbone)
    return True
