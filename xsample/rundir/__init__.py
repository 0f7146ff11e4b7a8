"""A run directory over its life: what the run is (identity, provenance), what it records (result.json,
checkpoint, heartbeat), how it stops on a signal (preemption) and whether it is skipped, resumed or refused
(lifecycle). Nothing is imported here: analysis/ reads heartbeat.py without torch."""
