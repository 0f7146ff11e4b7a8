"""Throughput of the caption-embedding cache build against calling the encoder directly on the same captions.

    python experiments/bench_graph_cache.py [--size 12k] [--encoder all-MiniLM-L6-v2]

Both paths run in this process on the same captions (direct first, then a fresh cache build); the ratio
is the cache's overhead (chunking, float16 conversion, memmap writes, progress file).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from xsample.data import build_dataset
from xsample.graph import CaptionEmbeddingCache, load_text_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="12k", help="shapes world size (3k or 12k)")
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    captions = build_dataset("shapes", "train", size=args.size).captions
    encoder = load_text_encoder(args.encoder)
    encoder.encode(captions[: args.batch_size])  # warm-up: first call pays one-off costs

    started = time.perf_counter()
    encoder.encode(captions, batch_size=args.batch_size)
    direct = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        CaptionEmbeddingCache.build(directory, len(captions), lambda start: iter(captions[start:]), encoder,
                                    batch_size=args.batch_size, progress=False)
        cached = time.perf_counter() - started

    count = len(captions)
    print(f"{count} captions, encoder {encoder.name}")
    print(f"direct encode : {direct:7.2f} s  {count / direct:8.1f} captions/s")
    print(f"cache build   : {cached:7.2f} s  {count / cached:8.1f} captions/s")
    print(f"ratio cache/direct: {cached / direct:.3f}")


if __name__ == "__main__":
    main()
