"""Hydra's own command-line flags for experiments/reproduce.py: --help, --hydra-help, --cfg job|hydra|all,
--resolve, --package, --info. reproduce.py hands such a command line to this Hydra app unchanged (table
ids quoted, the launcher it would choose put first), so that they behave as in any Hydra app: they print,
run no job, check nothing and write nothing."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../configs", config_name="reproduce", version_base="1.3")
def show(cfg: DictConfig) -> None:
    # Reached only without one of the flags above: this app never runs anything.
    sys.exit("xsample: experiments/show_config.py only answers Hydra's flags (--help, --cfg, --info); "
             "launch runs with experiments/reproduce.py")


if __name__ == "__main__":
    show()
