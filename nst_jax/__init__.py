"""nst_jax: neural style transfer and perceptual-loss super-resolution in JAX/Flax.

Library modules are pure and side-effect free on import; command-line entry points live in
``nst_jax.cli`` and the thin top-level scripts.
"""

__version__ = "0.1.0"
