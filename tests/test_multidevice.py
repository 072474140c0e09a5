"""Data parallelism on 8 fake CPU devices: a few train steps with the batch sharded over 8 devices
give the same parameters (float tolerance) as one device on the same global batch.

``--xla_force_host_platform_device_count`` must be set before JAX initializes, so the steps run
in a subprocess that prints its measurements as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHILD = r'''
import dataclasses, json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from nst_jax.fast import train_state
from nst_jax.core import image_io, vgg
from nst_jax.core import data, sharding
from nst_jax.fast import nets, training
from nst_jax import config
from nst_jax.config import LossConfig

vgg_path, data_dir = sys.argv[1], sys.argv[2]
loss = LossConfig(content_layers=("relu2_2",), content_layer_weights=(1.0,),
                  style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 1.0),
                  style_weight=1e-4, tv_weight=1e3, pooling="avg")
cfg = dataclasses.replace(config.train_smoke(), loss=loss, batch_size=8, learning_rate=3e-3,
                          input_noise=0.01)
model = nets.make_model(cfg.net)
# Adam's first steps are lr * sign(g): elements whose gradient is rounding noise (e.g. a conv bias
# before instance norm, zero in exact arithmetic) take +-lr steps either way, so Adam's parameters
# are not comparable at float tolerance. Unit-global-norm SGD moves every element in proportion
# to its gradient, which is what the two meshes must agree on.
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.01))
params = vgg.load_vgg19(vgg_path)
style = jnp.asarray(image_io.load_image(data_dir + "/styles/hokusai_great_wave.jpg", size=48))[None]
targets = training.make_style_targets(params, style, loss)
ds = data.FolderDataset(data_dir + "/train/t91", size=32, seed=0)
batches = [ds.get_batch(s, 8) for s in range(3)]
traces = {"n": 0}

def step_fn(state, images, vgg_params, style_targets, key):
  traces["n"] += 1
  return training.train_step(state, images, vgg_params, style_targets, key, model=model, tx=tx,
                             cfg=cfg)

def run(mesh):
  step = training.jit_train_step(step_fn, mesh)
  state = train_state.init_train_state(model, tx, train_state.make_key(0), mesh)
  p, t, k = (sharding.replicate(mesh, x) for x in (params, targets, train_state.make_key(0)))
  shard_counts, losses = [], []
  for b in batches:
    x = sharding.shard_batch(mesh, b)
    shard_counts.append(len({s.device for s in x.addressable_shards}))
    state, m = step(state, x, p, t, k)
    losses.append(float(m["total"]))
  replicas = len(state.params["conv1"]["kernel"].addressable_shards)
  return jax.device_get(state.params), losses, shard_counts, replicas

p8, l8, s8, r8 = run(sharding.make_mesh())
traces8 = traces["n"]
p1, l1, s1, r1 = run(sharding.make_mesh(jax.devices()[:1]))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)))
scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(p1))
init = jax.device_get(train_state.init_train_state(model, tx, train_state.make_key(0),
                                                sharding.make_mesh(jax.devices()[:1])).params)
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(init)))
print(json.dumps({"devices": jax.device_count(), "diff": diff, "scale": scale, "moved": moved,
                  "losses8": l8, "losses1": l1, "shards8": s8, "shards1": s1,
                  "replicas8": r8, "traces8": traces8, "traces_total": traces["n"]}))
'''


# Long (over 10 s on 2 busy cores): `-m slow`; test_multihost.py trains over a device mesh in two
# processes.
@pytest.mark.slow
def test_eight_devices_match_one_device(vgg_path, data_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, "-c", CHILD, str(vgg_path), str(data_dir)], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["devices"] == 8
  assert r["shards8"] == [8, 8, 8] and r["shards1"] == [1, 1, 1]  # the batch really is split
  assert r["replicas8"] == 8  # parameters replicated on every device
  assert r["traces8"] == 1 and r["traces_total"] == 2  # one trace per mesh, none per step
  assert r["moved"] > 1e-3  # the steps did change the parameters...
  assert r["diff"] <= 1e-3 * r["moved"], r  # ...identically, up to float rounding
  for a, b in zip(r["losses8"], r["losses1"]):
    assert abs(a - b) <= 1e-4 * abs(b)
