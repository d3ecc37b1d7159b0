#!/usr/bin/env python
"""GAN-EM's clustering benchmark: `benchmarks/clustering.py --model ganem` (mnist5k, seeds 0 1 2 by default).

    python benchmarks/ganem_mnist5k.py --seeds 0 1 2 [-- TRAINER_FLAGS]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clustering import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--model", "ganem", *sys.argv[1:]]))
