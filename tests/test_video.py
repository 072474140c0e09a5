"""Video: optical flow, warping and occlusion masks (core.flow), video I/O (core.video_io), the
fast method's consistency step (fast.video) and ``nst-jax video`` end to end."""


import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from nst_jax import cli
from nst_jax.cli import video as cli_video
from nst_jax.core import flow, video_io
from nst_jax.core.errors import UserError
from nst_jax.fast import video as fast_video
from nst_jax.fast import video_propagate

FPS = 12
SHIFT = (3, 2)  # (dx, dy): frame t shows frame t-1's content moved right 3, down 2


def texture(hw, seed=0, sigma=1.5) -> np.ndarray:
  """A smooth random RGB texture in [0, 1] (enough structure for the flow everywhere)."""
  img = gaussian_filter(np.random.default_rng(seed).random(hw + (3,)), (sigma, sigma, 0))
  return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def shifted_pair(hw=(32, 48)):
  big = texture((hw[0] + 20, hw[1] + 20))
  prev = big[10:10 + hw[0], 10:10 + hw[1]]
  cur = big[10 - SHIFT[1]:10 - SHIFT[1] + hw[0], 10 - SHIFT[0]:10 - SHIFT[0] + hw[1]]
  return prev, cur  # cur(x) = prev(x - SHIFT)


def make_clip(path, frames, *, fps=FPS, audio=True, rate=16000):
  """An H.264 MP4 of uint8 ``frames`` with a 440 Hz sine AAC track as long as the video."""
  with av.open(str(path), "w") as out:
    vs = out.add_stream("libx264", rate=fps)
    vs.height, vs.width = frames[0].shape[:2]
    vs.pix_fmt = "yuv420p"
    a = out.add_stream("aac", rate=rate) if audio else None
    if a is not None:
      a.layout = "mono"
    for i, f in enumerate(frames):
      vf = av.VideoFrame.from_ndarray(f, format="rgb24")
      vf.pts = i
      for p in vs.encode(vf):
        out.mux(p)
    for p in vs.encode(None):
      out.mux(p)
    if a is not None:
      n = rate * len(frames) // fps
      x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)[None]
      for i in range(0, n, 1024):
        af = av.AudioFrame.from_ndarray(x[:, i:i + 1024], format="fltp", layout="mono")
        af.sample_rate, af.pts = rate, i
        for p in a.encode(af):
          out.mux(p)
      for p in a.encode(None):
        out.mux(p)
  return path


def pan_frames(n=6, hw=(32, 48)) -> list[np.ndarray]:
  big = texture((hw[0] + 4 * n, hw[1] + 4 * n), seed=1, sigma=2.0)
  return [np.round(255 * big[2 * t:2 * t + hw[0], 3 * t:3 * t + hw[1]]).astype(np.uint8)
          for t in range(n)]


# --- core.flow -----------------------------------------------------------------------------------

def test_warp_with_an_integer_flow_is_a_shift_and_replicates_the_border():
  img = texture((10, 12))
  f = np.zeros((10, 12, 2), np.float32)
  f[..., 0], f[..., 1] = -3, -2  # x samples x - (3, 2)
  out = np.asarray(flow.warp(img, f))
  np.testing.assert_allclose(out[2:, 3:], img[:-2, :-3], atol=1e-6)
  np.testing.assert_allclose(out[0, 0], img[0, 0], atol=1e-6)  # clamped to the edge
  np.testing.assert_allclose(flow.remap(img, f)[2:, 3:], img[:-2, :-3], atol=1e-5)
  assert flow.inside_mask(f)[2:, 3:].all() and not flow.inside_mask(f)[:2].any()


def test_warp_is_bilinear_at_half_pixels():
  img = texture((6, 7))
  f = np.full((6, 7, 2), 0.5, np.float32)
  ref = (img[:-1, :-1] + img[1:, :-1] + img[:-1, 1:] + img[1:, 1:]) / 4  # numpy reference
  np.testing.assert_allclose(np.asarray(flow.warp(img, f))[:-1, :-1], ref, atol=1e-6)


def test_flow_of_a_known_shift_warps_the_previous_frame_onto_the_current():
  prev, cur = shifted_pair()
  f = flow.compute_flow(prev, cur)
  assert f.shape == (32, 48, 2) and f.dtype == np.float32
  inner = (slice(6, -6), slice(6, -6))
  np.testing.assert_allclose(np.median(f[inner].reshape(-1, 2), axis=0), [-3, -2], atol=0.1)
  err = np.abs(np.asarray(flow.warp(prev, f)) - cur)[inner].mean()
  assert err < 0.1 * np.abs(prev - cur)[inner].mean()
  mask = flow.reliable_mask(f, flow.compute_flow(cur, prev))
  assert not mask[:2].any() and not mask[:, :3].any()  # these come from outside the frame
  assert mask[inner].mean() > 0.95


def test_reliable_mask_marks_the_disoccluded_band_of_a_moving_square():
  hw, v = (40, 56), 4  # a square moving right by 4 px over a static background
  at = lambda x0: (slice(10, 26), slice(x0, x0 + 16))
  back, fwd = np.zeros(hw + (2,), np.float32), np.zeros(hw + (2,), np.float32)
  back[at(14) + (0,)] = -v  # frame t (square at x 14..29) into t-1 (square at 10..25)
  fwd[at(10) + (0,)] = v
  mask = flow.reliable_mask(back, fwd)
  band = np.zeros(hw, bool)
  band[10:26, 10:14] = True  # background at t that the square hid at t-1
  assert not mask[band].any()
  boundary = np.zeros(hw, bool)  # the square's edges (motion boundaries), one pixel around
  boundary[8:28, 12:32] = True
  boundary[11:25, 15:29] = False
  assert mask[~band & ~boundary].all()
  assert mask[12:24, 16:28].all()  # the moving square's inside is reliable


def test_reliable_mask_with_estimated_flow_on_a_moving_square():
  bg, fg = texture((40, 56), seed=2), texture((40, 56), seed=3)
  frames = []
  for x0 in (10, 14):
    img = bg.copy()
    img[10:26, x0:x0 + 16] = fg[10:26, 10:26]  # the square's texture moves with it
    frames.append(img)
  prev, cur = frames
  mask = flow.reliable_mask(flow.compute_flow(prev, cur), flow.compute_flow(cur, prev))
  assert mask[10:26, 10:14].mean() < 0.5  # the disoccluded band: mostly unreliable
  far = np.ones((40, 56), bool)
  far[6:30, 6:34] = False  # away from the square
  assert mask[far].mean() > 0.9


# --- core.video_io -------------------------------------------------------------------------------

def test_frame_folder_round_trip_is_exact_and_atomic(tmp_path):
  frames = pan_frames(4)
  with video_io.VideoWriter(tmp_path / "frames", fps=FPS) as out:
    for f in frames:
      out.write(f)
  info = video_io.probe(tmp_path / "frames", fps=FPS)
  assert (info.frame_count, info.width, info.height, info.has_audio) == (4, 48, 32, False)
  back = list(video_io.read_frames(tmp_path / "frames", fps=FPS, start=1 / FPS))
  assert len(back) == 3 and all(np.array_equal(a, b) for a, b in zip(back, frames[1:]))
  with pytest.raises(RuntimeError), video_io.VideoWriter(tmp_path / "x.mp4", fps=FPS) as out:
    out.write(frames[0])
    raise RuntimeError("killed")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no partial file, no temp


@pytest.mark.parametrize("kind", ["text", "png", "jpeg", "missing", "empty_folder"])
def test_bad_video_input_is_one_user_error(tmp_path, kind):
  path = tmp_path / "in.mp4"
  if kind == "text":
    path.write_text("not a video\n")
  elif kind in ("png", "jpeg"):
    from PIL import Image
    Image.new("RGB", (40, 30), "red").save(path, format=kind.upper())  # an image renamed .mp4
  elif kind == "empty_folder":
    path = tmp_path / "frames"
    path.mkdir()
  with pytest.raises(UserError) as info:
    video_io.probe(path)
  assert "\n" not in str(info.value)


# --- fast.video ----------------------------------------------------------------------------------

class NoisyStylizer:
  """A stand-in network that flickers: the frame plus fresh noise each call (per frame)."""

  batch_size = 2

  def __init__(self, sigma=0.1):
    self.rng, self.sigma = np.random.default_rng(0), sigma

  def stylize_many(self, images, **_):
    return [np.clip(im + self.rng.normal(0, self.sigma, im.shape), 0, 1).astype(np.float32)
            for im in images]


def test_temporal_blend_keeps_the_stylization_where_the_flow_is_unreliable():
  rng = np.random.default_rng(0)
  s, w = rng.random((5, 6, 3)), rng.random((5, 6, 3))
  mask = (rng.random((5, 6)) > 0.5).astype(np.float32)
  out = fast_video.temporal_blend(s, w, mask, weight=0.7)
  np.testing.assert_array_equal(out[mask == 0], s[mask == 0])  # no ghosting at occlusions
  np.testing.assert_allclose(out[mask == 1], (0.3 * s + 0.7 * w)[mask == 1])


def test_the_consistency_step_lowers_the_warping_error_of_a_flickering_network():
  frames = pan_frames(6)
  # frame t shows big[2t:, 3t:]: frame t-1's pixel x + (3, 2) is frame t's pixel x
  true_flows = [np.broadcast_to(np.array([3, 2], np.float32), (32, 48, 2))] * 5
  masks = [flow.inside_mask(f) for f in true_flows]
  plain = list(fast_video.stylize_frames(NoisyStylizer(), frames, temporal=False))
  steady = list(fast_video.stylize_frames(NoisyStylizer(), frames, weight=0.5))
  assert len(steady) == 6 and np.array_equal(steady[0], plain[0])  # same noise, frame 0 as is
  e_plain = fast_video.warping_error(plain, true_flows, masks)
  e_steady = fast_video.warping_error(steady, true_flows, masks)
  assert e_steady < 0.5 * e_plain
  first = list(fast_video.stylize_frames(NoisyStylizer(), frames, weight=0.0))
  np.testing.assert_allclose(first[3], plain[3], atol=1e-6)  # weight 0 is per-frame


def test_cli_default_weight_is_the_library_default():
  assert cli_video.DEFAULT_WEIGHT == fast_video.DEFAULT_WEIGHT
  assert cli_video.TEMPORAL_MODES == fast_video.MODES
  assert cli_video.DEFAULT_MODE == fast_video.DEFAULT_MODE


def test_propagate_keeps_the_stylization_where_the_mask_is_zero():
  rng = np.random.default_rng(0)
  s0, s1 = rng.random((2, 8, 10, 3)).astype(np.float32)
  carrier = video_propagate.Carrier()
  np.testing.assert_array_equal(carrier.step(s0, None), s0)
  f = np.zeros((8, 10, 2), np.float32)
  mask = np.ones((8, 10), np.float32)
  mask[:, :4] = 0
  out = carrier.step(s1, (f, mask))
  np.testing.assert_array_equal(out[mask == 0], s1[mask == 0])  # no ghosting
  np.testing.assert_allclose(out[:, 6:], s0[:, 6:], atol=1e-6)  # carried, away from the seam
  np.testing.assert_array_equal(carrier.step(s0, None), s0)  # a cut restarts


def test_propagate_composes_fractional_shifts_without_resampling_blur():
  """Four half-pixel steps are one 2-pixel shift, sampled once: exact (re-warping each frame
  would low-pass the texture at every step)."""
  rng = np.random.default_rng(1)
  first = rng.random((12, 16, 3)).astype(np.float32)  # white noise: blur would show at once
  f = np.zeros((12, 16, 2), np.float32)
  f[..., 0] = -0.5  # frame t's x shows frame t-1's x - 0.5
  carrier = video_propagate.Carrier(max_sources=2)
  carrier.step(first, None)
  for _ in range(4):
    out = carrier.step(rng.random((12, 16, 3)), (f, flow.inside_mask(f)))
    assert len(carrier.sources) <= 2  # the entering column's sources are the least used
  np.testing.assert_allclose(out[:, 2:], first[:, :-2], atol=1e-4)
  rewarped = first
  for _ in range(4):
    rewarped = flow.remap(rewarped, f)
  assert np.abs(rewarped[:, 2:] - first[:, :-2]).mean() > 0.03  # what carrying avoids


def test_propagate_lowers_the_warping_error_more_than_the_blend():
  frames = pan_frames(6)
  true_flows = [np.broadcast_to(np.array([3, 2], np.float32), (32, 48, 2))] * 5
  masks = [flow.inside_mask(f) for f in true_flows]
  plain = list(fast_video.stylize_frames(NoisyStylizer(), frames, temporal=False))
  steady = list(fast_video.stylize_frames(NoisyStylizer(), frames, mode="propagate"))
  blend = list(fast_video.stylize_frames(NoisyStylizer(), frames))
  assert np.array_equal(steady[0], plain[0])
  e_plain = fast_video.warping_error(plain, true_flows, masks)
  e_steady = fast_video.warping_error(steady, true_flows, masks)
  assert e_steady < 0.2 * e_plain and e_steady < fast_video.warping_error(blend, true_flows, masks)
  with pytest.raises(ValueError, match="mode"):
    next(fast_video.make_consistent(frames, plain, mode="optimize"))


# --- nst-jax video --------------------------------------------------------------------------------

def test_cli_keeps_frame_rate_frame_count_and_audio(tmp_path, capsys):
  src = make_clip(tmp_path / "in.mp4", pan_frames(8))
  out = tmp_path / "out" / "styled.mp4"
  code = cli.main(["video", str(src), "--out", str(out), "--model", "starry_lite",
                   "--bucket", "16", "--start", str(2 / FPS), "--duration", str(5 / FPS),
                   "--temporal", "propagate"])
  assert code == 0, capsys.readouterr().err
  with av.open(str(out)) as c:
    v = c.streams.video[0]
    assert v.average_rate == FPS and (v.codec_context.width, v.codec_context.height) == (48, 32)
    assert sum(1 for _ in c.decode(v)) == 5
    assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    seconds = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
    assert abs(seconds - 5 / FPS) < 0.1  # the same cut of the sound
  assert [p.name for p in out.parent.iterdir()] == ["styled.mp4"]


@pytest.mark.parametrize("case", ["text", "image", "past_end", "memory", "slow_no_style",
                                  "slow_bad_loss"])
def test_cli_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, case):
  src = tmp_path / "in.mp4"
  if case == "text":
    src.write_text("hello\n")
  elif case == "image":
    from PIL import Image
    Image.new("RGB", (40, 30), "red").save(src, format="PNG")
  else:
    make_clip(src, pan_frames(3), audio=False)
  argv = ["video", str(src), "--out", str(tmp_path / "o" / "out.mp4"), "--model", "starry_lite"]
  argv += {"past_end": ["--start", "60"], "memory": ["--max-memory", "0.01"],
           "slow_no_style": ["--method", "slow"],
           "slow_bad_loss": ["--method", "slow", "--style-image", "the_scream",
                             "--style-layers", "relu9_9"]}.get(case, [])
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("nst-jax video: error:"), err
  assert not (tmp_path / "o").exists()
