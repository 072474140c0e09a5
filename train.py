#!/usr/bin/env python3
"""Train a fast (feed-forward) style network; the same as ``nst-jax train``.

Example:
  python train.py --style ../shared/data/styles/van_gogh_starry_night.jpg \\
      --data ../shared/data/train --workdir runs/starry --preset thesis
  python train.py ... --set num_steps=400 --set size=128 --set net.width=0.5

Re-running the same command resumes from the workdir's newest checkpoint.
"""

import sys

from nst_jax import cli

if __name__ == "__main__":
  sys.exit(cli.main(["train"] + sys.argv[1:]))
