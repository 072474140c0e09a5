"""Every configuration of the package: frozen dataclasses, presets, names, typed overrides.

Synopsis::

  from nst_jax import config
  cfg = config.gatys()                                     # the classic slow transfer
  cfg = config.override(cfg, {"loss.style_weight": "1e4", "optim.optimizer": "adam"})
  cfg.loss.style_layers                                    # ('relu1_1', ..., 'relu5_1')
  train = config.override(config.thesis(), {"net.width": "0.5", "num_steps": "400"})
  config.keys(train)                                       # every dotted key, for --set

Configs are hashable, so they can be static arguments of ``jax.jit``. The package imports nothing
else from nst_jax (the import-rule test checks it): the names of layers, losses, optimizers and
the other choices are defined here once, and the command line's ``choices=`` read them from here.
Bad values raise ``ConfigError``, which names the config key (the command line maps it to a flag).

One module per wing, all re-exported here (``config.X`` is the one way to name any of them):
``common`` (names, constants, ``ConfigError``, ``LossConfig``, ``OptimConfig``), ``slow``
(``TransferConfig``, ``PhotoConfig``, ``ReconstructConfig``, ``VisualizeConfig``), ``fast``
(``TrainConfig``, ``NetConfig``, ``Smoothing``, the arbitrary-style configs), ``sr`` (``SRConfig``), ``web`` (``WebConfig``) and
``overrides`` (JSON and ``--set``). A name is defined in one of them only (the architecture test
checks), so the star imports below never shadow one another.
"""

from nst_jax.config.common import *
from nst_jax.config.fast import *
from nst_jax.config.overrides import *
from nst_jax.config.slow import *
from nst_jax.config.sr import *
from nst_jax.config.web import *
