"""The arbitrary-style network behind the Stylizer interface and ``nst-jax stylize --model
arbitrary``: a painting's embedding once, Ghiasi's strength per photo, mixes, any photo size,
the CLI's painting flags and their errors."""

import jax
import numpy as np
import pytest

from nst_jax import config
from nst_jax.cli import main
from nst_jax.cli import stylize as stylize_cli
from nst_jax.core import image_io, zoo
from nst_jax.core.errors import UserError
from nst_jax.fast import any_style, arbitrary, arbitrary_refine, inference

TINY = config.ArbitraryConfig(predictor="mobilenet_v2_tiny", embedding_dim=8, width=0.125,
                              num_residual=1, style_size=32)


@pytest.fixture(scope="module")
def tiny_net():
  return arbitrary.ArbitraryModel(arbitrary.init_params(jax.random.key(0), TINY), TINY)


@pytest.fixture(scope="module")
def stylizer(tiny_net):
  return any_style.AnyStyleStylizer(tiny_net, bucket=16)


def _image(h, w, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_the_painting_is_embedded_once_and_any_photo_size_is_stylized(stylizer, tiny_net):
  painting = _image(40, 56)
  emb = stylizer.set_style(image=painting)
  np.testing.assert_allclose(emb, np.asarray(tiny_net.embed(any_style.square_crop(painting, 32))),
                             rtol=1e-5, atol=1e-6)
  assert len(stylizer._embeddings) == 1  # pylint: disable=protected-access
  stylizer.set_style(image=painting.copy())  # same pixels: the cached embedding
  assert len(stylizer._embeddings) == 1  # pylint: disable=protected-access
  photos = [_image(20, 30, 1), _image(17, 9, 2)]
  outs = stylizer.stylize_many(photos)
  assert [o.shape for o in outs] == [(20, 30, 3), (17, 9, 3)]
  assert all(o.dtype == np.float32 and o.min() >= 0 and o.max() <= 1 for o in outs)
  # the bucket's padding is cropped away: the same as the network on the padded photo
  padded = inference.pad_to(photos[0], (32, 32))[0]
  direct = np.asarray(tiny_net.stylize(padded, emb))[:20, :30]
  np.testing.assert_allclose(outs[0], direct, atol=1e-5)


def test_strength_interpolates_embeddings_not_pixels(stylizer, tiny_net):
  painting, photo = _image(32, 32, 3), _image(24, 24, 4)
  emb = stylizer.set_style(image=painting)
  own = stylizer.embed(photo)
  half = stylizer.stylize_many([photo], strength=0.5)[0]
  mixed = 0.5 * own + 0.5 * emb
  expected = np.asarray(tiny_net.stylize(inference.pad_to(photo, (32, 32))[0], mixed))[:24, :24]
  np.testing.assert_allclose(half, expected, atol=1e-5)
  rows = stylizer.style_rows([photo], 0.0)
  np.testing.assert_allclose(rows[0], own, atol=1e-6)  # s = 0: the photo's own style
  assert stylizer.pixel_strength(0.3) == 1.0


def test_a_mix_of_paintings_is_the_weighted_mean_of_their_embeddings(stylizer):
  a, b = _image(32, 32, 5), _image(32, 48, 6)
  ea, eb = stylizer.embed(a), stylizer.embed(b)
  mixed = stylizer.set_style(mix=[(3.0, a), (1.0, b)])
  np.testing.assert_allclose(mixed, 0.75 * ea + 0.25 * eb, rtol=1e-5, atol=1e-6)


def test_bad_styles_are_one_line_errors(stylizer):
  with pytest.raises(UserError, match="2 x 2"):
    stylizer.set_style(image=np.zeros((1, 1, 3), np.float32))
  with pytest.raises(UserError, match="RGB"):
    stylizer.set_style(image=np.zeros((8, 8), np.float32))
  with pytest.raises(UserError, match="not a style index or name"):
    stylizer.set_style(name="starry")
  with pytest.raises(UserError, match="one painting"):
    stylizer.set_style()
  with pytest.raises(UserError, match="shape"):
    stylizer.set_style(embedding=np.zeros(3))
  fresh = any_style.AnyStyleStylizer(stylizer.net)
  with pytest.raises(UserError, match="no style set"):
    fresh.stylize_many([_image(8, 8)])


def test_from_any_without_the_import_names_the_import_command(tmp_path, monkeypatch):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  with pytest.raises(UserError, match="nst-jax models import magenta"):
    inference.Stylizer.from_any("arbitrary")


def test_from_any_dispatches_an_installed_arbitrary_model(tiny_net, tmp_path, monkeypatch):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
  zoo.install_model("arbitrary", {"params": tiny_net.params}, config.to_dict(TINY),
                    kind="arbitrary", source="test", licence="Apache-2.0")
  loaded = inference.Stylizer.from_any("arbitrary", bucket=16)
  assert isinstance(loaded, any_style.AnyStyleStylizer) and loaded.net.cfg == TINY
  path = zoo.user_dir() / "arbitrary.npz"
  assert isinstance(inference.Stylizer.from_any(str(path)), any_style.AnyStyleStylizer)
  with pytest.raises(UserError, match="float32"):
    inference.Stylizer.from_any("arbitrary", bf16=True)


def test_cli_with_a_painting_file_a_stem_and_a_mix(tiny_net, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("NST_JAX_DATA", str(tmp_path / "data"))
  zoo.install_model("arbitrary", {"params": tiny_net.params}, config.to_dict(TINY),
                    kind="arbitrary", source="test", licence="Apache-2.0")
  styles = tmp_path / "data" / "styles"
  styles.mkdir(parents=True)
  image_io.save_image(styles / "painter_starry_night.png", _image(24, 24, 7))
  image_io.save_image(styles / "painter_wave.png", _image(24, 24, 8))
  photo = tmp_path / "photo.png"
  image_io.save_image(photo, _image(20, 28, 9))
  base = ["stylize", "--model", "arbitrary", "--content", str(photo), "--bucket", "16"]
  assert main(base + ["--style-image", "starry", "--out", str(tmp_path / "a")]) == 0
  assert main(base + ["--style-image", str(styles / "painter_wave.png"), "--strength", "0.5",
                      "--out", str(tmp_path / "b")]) == 0
  assert main(base + ["--mix", "0.5:starry,0.5:wave", "--out", str(tmp_path / "c")]) == 0
  for folder in "abc":
    assert image_io.load_image(tmp_path / folder / "photo.png").shape == (20, 28, 3)
  capsys.readouterr()
  for extra, message in ((["--style-image", "painter"], "exactly one painting"),
                         ([], "needs one painting"),
                         (["--style-image", "wave", "--style-name", "x"], "needs one painting"),
                         (["--style-index", "0", "--style-image", "wave"], "not --style-index"),
                         (["--mix", "1:wave", "--refine", "3"], "give it --style-image"),
                         (["--style-name", "nope"], "no refined style named 'nope'"),
                         (["--mix", "x:wave"], "W:PAINTING")):
    assert main(base + extra + ["--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
  assert not (tmp_path / "bad").exists()


def test_find_painting_prefers_a_file_then_an_exact_stem(tmp_path, monkeypatch):
  monkeypatch.setenv("NST_JAX_DATA", str(tmp_path))
  (tmp_path / "styles").mkdir()
  for stem in ("wave", "great_wave"):
    (tmp_path / "styles" / f"{stem}.jpg").write_bytes(b"")
  assert stylize_cli.find_painting("wave").name == "wave.jpg"  # exact beats the part
  assert stylize_cli.find_painting("great").name == "great_wave.jpg"
  other = tmp_path / "x.png"
  other.write_bytes(b"")
  assert stylize_cli.find_painting(str(other)) == other


@pytest.mark.slow  # by default: test_arbitrary_refine's named-style round trip
def test_a_refined_style_by_name_carries_its_embedding_and_norm_offsets(tiny_net, tmp_path,
                                                                        monkeypatch, capsys):
  monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "cache"))
  zoo.install_model("arbitrary", {"params": tiny_net.params}, config.to_dict(TINY),
                    kind="arbitrary", source="test", licence="Apache-2.0")
  emb = np.linspace(-1, 1, TINY.embedding_dim).astype(np.float32)
  deltas = {k: {p: np.full_like(np.asarray(v[p]), 0.3) for p in v}
            for k, v in arbitrary_refine.zero_norm_deltas(tiny_net.params["transfer"]).items()}
  result = arbitrary_refine.RefineResult(emb, emb, deltas, (2.0, 1.0), 3, {"lr": 0.1}, 0.5)
  arbitrary_refine.save_style("mine", result, painting_sha256="p", base_sha256="b")
  photo_path = tmp_path / "photo.png"
  image_io.save_image(photo_path, _image(16, 20, 11))
  assert main(["stylize", "--model", "arbitrary", "--style-name", "mine", "--content",
               str(photo_path), "--bucket", "16", "--out", str(tmp_path / "o")]) == 0
  got = image_io.load_image(tmp_path / "o" / "photo.png")
  photo = image_io.load_image(photo_path)
  shifted = arbitrary_refine.apply_norm_deltas(tiny_net.params, deltas)
  want = np.asarray(arbitrary.stylize(shifted, inference.pad_to(photo, (16, 32))[0], emb,
                                      cfg=TINY))[:16, :20]
  np.testing.assert_allclose(got, want, atol=1.5 / 255)  # the PNG's 8 bits
  plain = np.asarray(arbitrary.stylize(tiny_net.params, inference.pad_to(photo, (16, 32))[0],
                                       emb, cfg=TINY))[:16, :20]
  assert np.abs(plain - want).max() > 2 / 255  # the offsets were applied
  assert "refined style mine" in (main(["models"]) == 0 and capsys.readouterr().out)
