"""The method names a run config may carry (configs/method/*.yaml), without importing torch: the analysis reads them too."""

METHODS = ("simclr", "supcon", "xclr", "clip", "untrained", "raw_pixels")
# Baselines measured by the same evaluation code without any training.
BASELINES = ("untrained", "raw_pixels")
# The one method whose target is built from a graph of side information (configs/graph/).
GRAPH_METHOD = "xclr"


def reads_captions(method: str, graph_source: str | None) -> bool:
    """Whether a run of ``method`` reads its samples' captions: CLIP's text tower, X-CLR's caption graph."""
    return method == "clip" or (method == GRAPH_METHOD and graph_source == "captions")


def reads_labels(method: str, graph: dict | None) -> bool:
    """Whether a run of ``method`` reads its samples' class labels: SupCon's positives, X-CLR's class-name
    graph and its per-class random graph."""
    if method == "supcon":
        return True
    return method == GRAPH_METHOD and graph is not None and (
        graph["source"] == "class_names" or (graph["source"] == "random" and graph["granularity"] == "class"))


def graph_label(graph: dict | None) -> str | None:
    """How reports name a run's graph: its source and what draws it, the text encoder or the random graph's
    granularity ("class_names (all-MiniLM-L6-v2)", "random (sample)"); None for a run without a graph."""
    if graph is None:
        return None
    return f"{graph['source']} ({graph['granularity'] if graph['source'] == 'random' else graph['encoder']})"
