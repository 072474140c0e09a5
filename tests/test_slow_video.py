"""Slow video transfer (Ruder et al. 2016): the temporal loss, the warm start, resume, one
compilation for all frames."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nst_jax import config
from nst_jax.core import image_io, objective, video_io
from nst_jax.slow import video

SHIFT = 2  # pixels the tiny pan moves per frame


def test_temporal_loss_matches_numpy_and_its_gradient(rng):
  x, warped = (rng.uniform(0, 1, (2, 5, 4, 3)).astype(np.float32) for _ in range(2))
  mask = (rng.uniform(0, 1, (2, 5, 4, 1)) > 0.4).astype(np.float32)
  want = (mask * (x - warped) ** 2).reshape(2, -1).sum(1) / (5 * 4 * 3)
  got = jax.jit(video.temporal_loss)(x, warped, mask)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  grad = jax.grad(lambda a: jnp.sum(video.temporal_loss(a, warped, mask)))(x)
  np.testing.assert_allclose(grad, 2 * mask * (x - warped) / (5 * 4 * 3), rtol=1e-5, atol=1e-8)
  check_grads(lambda a: video.temporal_loss(a, warped, mask), (x,), order=2, modes=("rev",),
              atol=1e-2, rtol=1e-2)
  # Zero, with a zero gradient, at its target; zero wherever the mask is.
  np.testing.assert_array_equal(video.temporal_loss(warped, warped, mask), 0.0)
  assert not np.any(jax.grad(lambda a: jnp.sum(video.temporal_loss(a, warped, mask)))(warped))
  np.testing.assert_array_equal(video.temporal_loss(x, warped, 0 * mask), 0.0)


def pan_clip(data_dir, n=3, size=32):
  """n uint8 frames of a window moving SHIFT px right per frame over a photo: frame t at x is
  frame t-1 at x + SHIFT (the true flow), its last SHIFT columns newly seen."""
  photo = image_io.load_image(data_dir / "content/classic_st/tubingen.jpg", size=2 * size)
  return [image_io.to_uint8(photo[:size, t * SHIFT:t * SHIFT + size]) for t in range(n)]


def warping_error(outs) -> float:
  """Lai et al. 2018's E_warp under the pan's true flow (the newly seen columns left out)."""
  f = [o.astype(np.float32) / 255 for o in outs]
  return float(np.mean([np.mean((b[:, :-SHIFT] - a[:, SHIFT:]) ** 2) 
                         for a, b in itertools.pairwise(f)]))


# A weight no other test module uses: a new loss function, so its compilation is counted here.
VCFG = config.SlowVideoConfig(temporal_weight=2.5e4, checkpoint_every=6)


def tiny_cfg():
  return config.override(config.gatys(), {
      "size": 32, "loss.content_layers": "relu2_1", "loss.style_layers": "relu1_1,relu2_1",
      "loss.style_layer_weights": "1,1", "optim.num_iters": 12, "optim.chunk": 6,
      "init": "noise", "optim.optimizer": "adam", "optim.learning_rate": 0.03})


@pytest.mark.real_weights
def test_clip_is_consistent_resumes_without_recomputing_and_compiles_once(
    vgg_params, data_dir, tmp_path, monkeypatch):
  frames, style = pan_clip(data_dir), pan_clip(data_dir, 1)[0][::-1]
  cfg = tiny_cfg()
  vcfg = VCFG
  traces, calls = [], []
  loss_terms, stylize_frame = objective.loss_terms, video.stylize_frame
  monkeypatch.setattr(objective, "loss_terms", lambda *a: traces.append(1) or loss_terms(*a))
  monkeypatch.setattr(video, "stylize_frame",
                      lambda vgg, frame, *a, **k: calls.append(1) or stylize_frame(vgg, frame,
                                                                                   *a, **k))
  run = lambda workdir, clip, temporal=True: video.stylize_clip(
      clip, style, config=cfg, workdir=workdir, temporal=temporal, vgg_params=vgg_params,
      video_config=vcfg)
  seen = []
  for out in run(tmp_path / "full", frames):
    seen.append(len(traces))
  full = list(run(tmp_path / "full", frames))  # all three again, from disk
  assert len(full) == 3 and full[0].shape == (32, 32, 3) and full[0].dtype == np.uint8
  assert seen[0] > 0 and seen[1] == seen[2] == seen[0], seen  # frames 1-2 compiled nothing
  assert len(calls) == 3  # the second pass recomputed nothing

  # A run stopped after two frames: the rerun does frame 2 only, to the same frames.
  stopped = run(tmp_path / "killed", frames)
  first_two = [next(stopped), next(stopped)]
  stopped.close()
  calls.clear()
  resumed = list(run(tmp_path / "killed", frames))
  assert len(calls) == 1
  for a, b in zip(first_two + resumed[2:], full):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(resumed, full):
    np.testing.assert_array_equal(a, b)
  # Another clip in the same workdir is not mistaken for this one from its first changed frame.
  calls.clear()
  changed = frames[:2] + [frames[2][:, ::-1].copy()]
  assert len(list(run(tmp_path / "killed", changed))) == 3 and len(calls) == 1

  per_frame = list(run(tmp_path / "per_frame", frames, temporal=False))
  assert warping_error(full) < 0.5 * warping_error(per_frame), (
      warping_error(full), warping_error(per_frame))
  np.testing.assert_array_equal(full[0], per_frame[0])  # frame 0 has nothing to follow


@pytest.mark.real_weights
def test_loss_fn_adds_the_weighted_temporal_term(vgg_params):
  cfg = dataclasses.replace(config.LossConfig(), style_layers=(), style_layer_weights=(),
                            content_layers=())
  loss_fn = video.make_loss_fn(cfg, 3.0)
  x = jnp.full((1, 8, 8, 3), 0.5)
  aux = {"targets": {"content": {}, "styles": (), "blend": jnp.ones(0)},
         "warped": jnp.zeros((1, 8, 8, 3)), "mask": jnp.ones((1, 8, 8, 1))}
  total, terms = loss_fn(x, vgg_params, aux)
  np.testing.assert_allclose(terms["temporal"], [3.0 * 0.25], rtol=1e-6)
  np.testing.assert_allclose(total, terms["tv"][0] + 0.75, rtol=1e-6)


@pytest.mark.real_weights
def test_a_video_file_resumes_after_a_kill_and_leaves_no_partial_output(
    vgg_params, data_dir, tmp_path, monkeypatch):
  pytest.importorskip("av")
  frames = pan_clip(data_dir)
  with video_io.VideoWriter(tmp_path / "in.mp4", fps=4) as out:
    for frame in frames:
      out.write(frame)
  style = pan_clip(data_dir, 1)[0][::-1].astype(np.float32) / 255
  out, calls = tmp_path / "out.mp4", []
  stylize_frame = video.stylize_frame

  def killed_at_frame_2(vgg, frame, *a, **k):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return stylize_frame(vgg, frame, *a, **k)

  run = lambda: video.stylize_file(tmp_path / "in.mp4", out, style_image=style, config=tiny_cfg(),
                                   vgg_params=vgg_params, video_config=VCFG, progress=False)
  monkeypatch.setattr(video, "stylize_frame", killed_at_frame_2)
  with pytest.raises(KeyboardInterrupt):
    run()
  assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
      ".out.mp4.frames", "in.mp4"]  # no partial output, the finished frames kept
  calls.clear()
  monkeypatch.setattr(video, "stylize_frame", lambda *a, **k: calls.append(1) or stylize_frame(
      *a, **k))
  assert run() == out and len(calls) == 1  # frames 0-1 came from the folder
  assert len(list(video_io.read_frames(out))) == 3 and video_io.probe(out).width == 32
  assert not (tmp_path / ".out.mp4.frames").exists()
