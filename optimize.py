#!/usr/bin/env python3
"""Slow (optimization-based) style transfer; the same as ``nst-jax optimize``.

Example:
  python optimize.py --content photo.jpg --style painting.jpg --out out.png --size 512
"""

import sys

from nst_jax import cli

if __name__ == "__main__":
  sys.exit(cli.main(["optimize"] + sys.argv[1:]))
