"""``python -m nst_jax.cli ...``: the same as ``nst-jax ...``."""

import sys

from nst_jax.cli import main

sys.exit(main())
