"""The run tasks other than pretraining (config ``task``): ``graph_stats`` (Fig. 5, graph only) and ``compute``
(Sec. 4.5, per-step cost)."""
