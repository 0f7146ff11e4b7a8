"""Command line for similarity graphs.

    python -m xsample.graph build --dataset shapes --option size=12k
    python -m xsample.graph stats --dataset shapes --option size=12k --graph captions
    python -m xsample.graph stats --dataset fashion_mnist --graph class_names
    python -m xsample.graph diagnose --dataset fashion_mnist --graph class_names --batch-size 64
    python -m xsample.graph paper-profile      # the MiniLM ImageNet-1k class-name graph at batch 4096, 1024, 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch.utils.data import IterableDataset

from xsample.graph.cache import CaptionEmbeddingCache
from xsample.graph.diagnostics import PAPER_PROFILE_BATCH_SIZES, batch_diagnostics, paper_profile
from xsample.graph.encoders import DEFAULT_ENCODER, class_caption_embeddings, load_text_encoder
from xsample.graph.stats import graph_stats


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xsample.graph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("build", "build (or resume) the caption-embedding cache of a dataset"),
                            ("stats", "print the distribution of off-diagonal graph similarities"),
                            ("diagnose", "print X-CLR's target shares (other view, same class, rest) over random batches")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--dataset", required=True, help="registered dataset name, e.g. shapes, cc3m")
        command.add_argument("--split", default="train")
        command.add_argument("--root", default=None, help="dataset root (paper-scale datasets)")
        command.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                             help="dataset option, e.g. size=12k (repeatable)")
        command.add_argument("--encoder", default=DEFAULT_ENCODER)
        command.add_argument("--template", default=None,
                             help='caption template ("{}" for captions, "a photo of a {}" for class names)')
        command.add_argument("--cache-root", default=os.environ.get("XSAMPLE_CACHE", ".cache/xsample"))
        command.add_argument("--chunk-size", type=int, default=4096)
    stats, diagnose = commands.choices["stats"], commands.choices["diagnose"]
    for command in (stats, diagnose):
        command.add_argument("--graph", choices=("captions", "class_names"), default="captions")
        command.add_argument("--seed", type=int, default=0)
    stats.add_argument("--bins", type=int, default=40)
    stats.add_argument("--max-pairs", type=int, default=1_000_000)
    profile = commands.add_parser("paper-profile", help="diagnose the paper's ImageNet-1k class-name graph "
                                  "(the 1000 class names shipped with open_clip/timm) at several batch sizes")
    profile.add_argument("--encoder", default=DEFAULT_ENCODER)
    profile.add_argument("--template", default="a photo of a {}")
    profile.add_argument("--batch-size", type=int, nargs="+", default=list(PAPER_PROFILE_BATCH_SIZES))
    for command in (diagnose, profile):
        command.add_argument("--graph-temperature", type=float, default=0.1)
    diagnose.add_argument("--batch-size", type=int, required=True)
    return parser


def _cache(args: argparse.Namespace, dataset) -> CaptionEmbeddingCache:
    return CaptionEmbeddingCache.for_dataset(
        dataset, cache_root=args.cache_root, encoder_name=args.encoder, template=args.template or "{}",
        name=args.dataset, split=args.split, root=args.root, options=dict(args.option), chunk_size=args.chunk_size,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from xsample.data import build_dataset, dataset_labels

    try:
        if args.command == "paper-profile":
            print(json.dumps(paper_profile(args.encoder, args.template, args.graph_temperature, args.batch_size),
                             indent=1))
            return 0
        dataset = build_dataset(args.dataset, args.split, args.root, **dict(args.option))
        if args.command == "build":
            started = time.perf_counter()
            cache = _cache(args, dataset)
            seconds = time.perf_counter() - started
            print(f"cache {cache.directory}: {len(cache)} x {cache.dim} float16, "
                  f"checksum {cache.manifest['checksum'][:16]} ({seconds:.1f} s this call)")
            return 0
        if args.graph == "captions":
            embeddings = _cache(args, dataset).rows(torch.arange(len(dataset)))
        else:
            names = list(dataset.class_names)
            embeddings = class_caption_embeddings(names, load_text_encoder(args.encoder),
                                                  template=args.template or "a photo of a {}")
        if args.command == "diagnose":
            labels = None if isinstance(dataset, IterableDataset) else dataset_labels(dataset)  # shards: no classes
            per_sample = embeddings.float() if args.graph == "captions" else embeddings[torch.as_tensor(labels)]
            print(json.dumps(batch_diagnostics(lambda indices: per_sample[torch.as_tensor(indices)], labels,
                                               len(dataset), batch_size=args.batch_size, seed=args.seed,
                                               graph_temperature=args.graph_temperature), indent=1))
            return 0
        print(json.dumps(graph_stats(embeddings, bins=args.bins, max_pairs=args.max_pairs, seed=args.seed)
                         | {"graph": args.graph, "num_nodes": int(embeddings.shape[0])}, indent=1))
        return 0
    except (OSError, ModuleNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
