"""Style refinement of the arbitrary network (fast.arbitrary_refine): the loss goes down, named
styles round-trip, bad input is one line; the CLI's `models refine`."""

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import config
from nst_jax.cli import main
from nst_jax.core.errors import UserError
from nst_jax.fast import arbitrary, magenta
from nst_jax.fast import arbitrary_refine as refine

TINY = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                              num_residual=1, style_size=32, conv_impl="xla")
# A cheap objective for the tiny tests: shallow layers only (the default is the zoo's).
SMALL_LOSS = config.LossConfig(content_layers=("relu2_1",), content_layer_weights=(1.0,),
                               style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 1.0),
                               content_weight=1.0, style_weight=1e-2, tv_weight=1.0,
                               pooling="avg", conv_impl="xla")


@pytest.fixture(scope="module")
def tiny_model():
  return arbitrary.ArbitraryModel(arbitrary.init_params(jax.random.key(0), TINY), TINY)


def _painting(size=32):
  y, x = np.mgrid[:size, :size] / size
  return np.stack([np.sin(9 * x) * 0.5 + 0.5, (y > 0.5) * 0.8, x * y], -1).astype(np.float32)


def _photos(n=2, size=32):
  return np.random.default_rng(0).uniform(0.2, 0.8, (n, size, size, 3)).astype(np.float32)


def _refine(model, vgg_params, **kw):
  return refine.refine_embedding(model, _painting(), _photos(), vgg_params=vgg_params,
                                 loss_cfg=SMALL_LOSS, style_size=32, **kw)


def test_refinement_lowers_the_loss(tiny_model, vgg_params):
  seen = []
  result = _refine(tiny_model, vgg_params, steps=4, learning_rate=0.2,
                   callback=lambda step, loss: seen.append((step, loss)))
  assert [s for s, _ in seen] == [1, 2, 3, 4] and len(result.losses) == 5
  assert result.losses[-1] < result.losses[0]
  assert result.embedding.shape == (8,) and result.norm_deltas is None
  assert not np.allclose(result.embedding, result.initial_embedding)
  np.testing.assert_allclose(result.initial_embedding, tiny_model.embed(_painting()), atol=1e-6)
  assert result.settings["photos"] == 2 and result.seconds > 0
  compiled = refine.loss_and_grad._cache_size()  # pylint: disable=protected-access
  _refine(tiny_model, vgg_params, steps=1, learning_rate=0.2)  # another call: no recompile
  assert refine.loss_and_grad._cache_size() == compiled  # pylint: disable=protected-access


def test_lbfgs_refinement_lowers_the_loss_within_its_evaluations(tiny_model, vgg_params):
  seen = []
  result = _refine(tiny_model, vgg_params, steps=5, optimizer="lbfgs",
                   callback=lambda step, loss: seen.append((step, loss)))
  assert [s for s, _ in seen] == [1, 2, 3, 4, 5]  # the budget holds inside a line search too
  assert result.losses[:-1] == tuple(loss for _, loss in seen)
  assert result.losses[-1] == min(result.losses) < result.losses[0]  # the best point returned
  assert result.settings["optimizer"] == "lbfgs" and result.norm_deltas is None
  # the returned embedding has the reported loss
  targets = refine.training.make_style_targets(vgg_params, _painting()[None], SMALL_LOSS)
  loss = refine.refine_loss({"embedding": result.embedding, "norm_deltas": None},
                            tiny_model.params, _photos(), vgg_params, targets, SMALL_LOSS, TINY)
  assert float(loss) == pytest.approx(result.losses[-1], rel=1e-4)
  for kw, match in (({"optimizer": "sgd"}, "optimizer must be one of lbfgs, adam"),
                    ({"optimizer": "lbfgs", "batch": 1}, "L-BFGS .* all photos")):
    with pytest.raises(UserError, match=match):
      _refine(tiny_model, vgg_params, steps=1, **kw)


def test_refinement_in_mini_batches_takes_the_photos_in_turn(tiny_model, vgg_params):
  # 2 photos a step (the compiled shape above): step i takes mini-batch i mod (B / 2)
  a = _photos()
  whole = _refine(tiny_model, vgg_params, steps=2, learning_rate=0.2)
  batched = lambda photos: refine.refine_embedding(
      tiny_model, _painting(), photos, vgg_params=vgg_params, loss_cfg=SMALL_LOSS, style_size=32,
      steps=2, learning_rate=0.2, batch=2)
  twice = batched(np.concatenate([a, a]))  # both mini-batches are the photos above: the same run
  np.testing.assert_allclose(twice.embedding, whole.embedding, rtol=1e-5, atol=1e-6)
  assert twice.losses == pytest.approx(whole.losses, rel=1e-5)
  other = batched(np.concatenate([a, 1.0 - a]))  # the second step sees other photos
  assert other.losses[0] == pytest.approx(whole.losses[0], rel=1e-5)
  assert other.losses[1] != pytest.approx(whole.losses[1], rel=1e-3)
  assert other.settings["batch"] == 2 and other.settings["photos"] == 4
  for bad in (0, 5):
    with pytest.raises(UserError, match="batch must be 1-4"):
      refine.refine_embedding(tiny_model, _painting(), np.concatenate([a, a]),
                              vgg_params=vgg_params, loss_cfg=SMALL_LOSS, steps=1, batch=bad)


@pytest.mark.slow  # by default: test_refinement_lowers_the_loss (the embedding alone)
def test_refinement_with_norm_offsets(tiny_model, vgg_params):
  result = _refine(tiny_model, vgg_params, steps=3, learning_rate=0.2, norms=True)
  assert result.losses[-1] < result.losses[0]
  assert set(result.norm_deltas) == {"res1/norm1", "res1/norm2", "norm4", "norm5", "norm_out"}
  assert result.norm_deltas["norm_out"]["gamma"].shape == (3,)
  # zero offsets leave the network as it is
  zero = refine.zero_norm_deltas(tiny_model.params["transfer"])
  photo = _photos(1)[0]
  np.testing.assert_allclose(refine.stylize(tiny_model, photo, result.embedding, zero),
                             tiny_model.stylize(photo, result.embedding), atol=1e-6)


def test_named_style_round_trip(tiny_model, vgg_params, tmp_path, monkeypatch):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  result = _refine(tiny_model, vgg_params, steps=1, norms=True)
  assert refine.list_styles() == []
  path = refine.save_style("my-style.v1", result, painting_sha256="ab" * 32,
                           base_sha256="cd" * 32, provenance={"painting": "p.jpg"})
  assert path == tmp_path / "styles" / "my-style.v1.npz" and refine.list_styles() == ["my-style.v1"]
  style = refine.load_style("my-style.v1")
  np.testing.assert_array_equal(style.embedding, result.embedding)
  for key, delta in result.norm_deltas.items():
    np.testing.assert_array_equal(style.norm_deltas[key]["beta"], delta["beta"])
  assert style.meta["painting_sha256"] == "ab" * 32 and style.meta["steps"] == 1
  assert style.meta["settings"]["loss"]["style_layers"] == ["relu1_1", "relu2_1"]
  assert "my-style.v1: 1 steps" in refine.describe_style("my-style.v1")
  with pytest.raises(UserError, match=r"no refined style named 'other' \(known: my-style.v1\)"):
    refine.load_style("other")
  for bad in ("", "../x", "a b", ".hidden"):
    with pytest.raises(UserError, match="style name"):
      refine.style_path(bad)
  (tmp_path / "styles" / "junk.npz").write_bytes(b"junk")
  with pytest.raises(UserError, match="not a readable"):
    refine.load_style("junk")


def test_bad_inputs(tiny_model, vgg_params, tmp_path):
  with pytest.raises(UserError, match="at least 2 x 2"):
    refine.refine_embedding(tiny_model, np.ones((1, 1, 3)), _photos(), vgg_params=vgg_params,
                            loss_cfg=SMALL_LOSS, steps=1)
  with pytest.raises(UserError, match="multiples of 4"):
    refine.refine_embedding(tiny_model, _painting(), _photos(size=30), vgg_params=vgg_params,
                            loss_cfg=SMALL_LOSS, steps=1)
  with pytest.raises(UserError, match="need 2 photos"):
    refine.load_photos(tmp_path / "nowhere", count=2, size=64)


def test_load_photos_square_crops(tmp_path):
  for i, hw in enumerate(((40, 60), (70, 50), (64, 64))):
    Image.fromarray(np.full(hw + (3,), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
  photos = refine.load_photos(tmp_path, count=2, size=34)
  assert photos.shape == (2, 32, 32, 3) and photos.dtype == np.float32


def test_cli_refine_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
  (tmp_path / "text.jpg").write_text("not an image")
  cases = [(["--style-image", str(tmp_path / "ok.png")], "needs --style-image PAINTING and --name"),
           (["--style-image", str(tmp_path / "text.jpg"), "--name", "s"], "text.jpg"),
           (["--style-image", str(tmp_path / "dot.png"), "--name", "s"], "at least 2 x 2"),
           (["--style-image", str(tmp_path / "ok.png"), "--name", "a/b"], "style name"),
           (["--style-image", str(tmp_path / "ok.png"), "--name", "s"], "models import magenta")]
  for flags, message in cases:
    assert main(["models", "refine", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
  assert not (tmp_path / "cache" / "styles").exists()  # no partial output


@pytest.mark.slow
def test_cli_refine_tiny_model_end_to_end(tmp_path, monkeypatch, capsys, vgg_path):
  # A tiny model stored where the imported one lives; the default (zoo) objective at 32 px.
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  params = arbitrary.init_params(jax.random.key(0), TINY)
  magenta.store(params, config.to_dict(TINY), {}, {"origin": "test"})
  photos = tmp_path / "photos"
  photos.mkdir()
  for i in range(2):
    Image.fromarray((_photos(1, 48)[0] * 255).astype(np.uint8)).save(photos / f"{i}.png")
  Image.fromarray((_painting(40) * 255).astype(np.uint8)).save(tmp_path / "paint.png")
  assert main(["models", "refine", "--style-image", str(tmp_path / "paint.png"), "--name",
               "tiny", "--steps", "2", "--photos", str(photos), "--photo-count", "2",
               "--photo-size", "32",
               "--vgg-weights", str(vgg_path)]) == 0
  assert "refined style 'tiny'" in capsys.readouterr().out
  assert refine.load_style("tiny").embedding.shape == (8,)
  assert main(["models"]) == 0
  assert "refined style tiny: 2 steps" in capsys.readouterr().out
