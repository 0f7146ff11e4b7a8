"""xsample: a reproduction library for X-CLR (X-Sample Contrastive Loss).

Subpackages: ``losses`` (contrastive core and target builders), ``graph`` (text encoders and
similarity graphs), ``data`` (datasets and augmentations), ``models`` (backbones, projectors,
CLIP towers), ``train`` (one preemption-safe run), ``eval`` (probes and protocols).
No Hydra here: the ``experiments/`` entry points compose this library from ``configs/``.
"""

__version__ = "0.1.0"
