"""xsample: a reproduction library for X-CLR (X-Sample Contrastive Loss).

Subpackages: ``losses`` (contrastive core and target builders), ``graph`` (text encoders and
similarity graphs), ``data`` (datasets, decoding, the training item), ``views`` (augmentations: PIL and
batched), ``models`` (backbones, projectors, CLIP towers), ``train`` (one run's work: the training step),
``tasks`` (graph statistics, compute cost), ``rundir`` (a run directory's life: identity, result.json,
checkpoint, heartbeat, preemption), ``eval`` (probes and protocols).
No Hydra here: the ``experiments/`` entry points compose this library from ``configs/``.
"""

__version__ = "0.1.0"
