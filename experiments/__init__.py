"""Entry points that compose the xsample library from configs/ (the app layer; Hydra lives here)."""

from omegaconf import OmegaConf

from experiments.run_config import short_job_dirname

# configs/reproduce.yaml names Hydra's job directories through this resolver. Registered on import of
# the package, so that a SLURM job unpickling the task function (which imports experiments.*) has it.
OmegaConf.register_new_resolver("xsample_job_dir", short_job_dirname, replace=True)
