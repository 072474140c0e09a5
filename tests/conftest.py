"""Shared fixtures. Shared data and weights are found through overridable paths:

- NST_JAX_SHARED: the shared folder (default: ../shared beside the repository);
- NST_JAX_VGG_WEIGHTS / NST_JAX_DATA override the weights file / data folder individually.
"""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NST_JAX_SHARED", REPO.parent / "shared"))
VGG_PATH = Path(os.environ.get("NST_JAX_VGG_WEIGHTS", SHARED / "weights" / "vgg19_conv.npz"))
DATA_DIR = Path(os.environ.get("NST_JAX_DATA", SHARED / "data"))


@pytest.fixture(scope="session")
def vgg_path() -> Path:
  if not VGG_PATH.is_file():
    pytest.skip(f"VGG19 weights not found at {VGG_PATH} (set NST_JAX_VGG_WEIGHTS)")
  return VGG_PATH


@pytest.fixture(scope="session")
def vgg_params(vgg_path):
  from nst_jax import vgg
  return vgg.load_vgg19(vgg_path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
  if not DATA_DIR.is_dir():
    pytest.skip(f"shared data not found at {DATA_DIR} (set NST_JAX_DATA)")
  return DATA_DIR


@pytest.fixture
def rng():
  return np.random.default_rng(0)
