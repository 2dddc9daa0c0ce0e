"""Do translations depend on the batch size? Translate a split with several batch sizes and
compare the outputs byte for byte.

    python benchmarks/batch_invariance.py --model RUN_DIR --data DATA_DIR [--beams 1 5] [--batch-sizes 1 7 64]
"""

from __future__ import annotations

import argparse

from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions
from mtkit.translate import Translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 7, 64])
    args = parser.parse_args()
    sources = DataDir(args.data).eval_set(args.split).sources
    translator = Translator(args.model)
    for beam in args.beams:
        outputs = {b: translator.translate(sources, SearchOptions(beam=beam), b) for b in args.batch_sizes}
        reference = outputs[args.batch_sizes[0]]
        for size, out in outputs.items():
            differing = sum(a != b for a, b in zip(reference, out))
            print(f"beam {beam}, batch size {size}: {differing} of {len(out)} lines differ from batch size {args.batch_sizes[0]}", flush=True)


if __name__ == "__main__":
    main()
