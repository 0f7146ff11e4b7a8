"""The method names a run config may carry (configs/method/*.yaml), without importing torch: the analysis reads them too."""

METHODS = ("simclr", "supcon", "xclr", "clip", "untrained", "raw_pixels")
# Baselines measured by the same evaluation code without any training.
BASELINES = ("untrained", "raw_pixels")
