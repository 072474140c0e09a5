"""What a run tells the user: the progress bar's values and lines, the resume message."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from tqdm import tqdm

from nst_jax.config import OptimConfig
from nst_jax.slow import driver, optimize


def _quadratic(x, shared, aux):
  # x, aux: [1, 4, 4, 3]; terms per example [1].
  err = jnp.sum((x - aux) ** 2, axis=(1, 2, 3)) * shared
  return jnp.sum(err), {"total": err}


@pytest.fixture
def eager_bar(monkeypatch):
  """Every bar update is drawn (no 0.1 s rate limit), as on a slow real run."""
  monkeypatch.setattr(optimize, "tqdm", functools.partial(tqdm, mininterval=0, miniters=1))


def _lines(err: str) -> list[str]:
  return [l.strip() for l in err.replace("\r", "\n").splitlines() if l.strip()]


def test_bar_shows_compiling_this_chunks_values_and_one_final_line(eager_bar, capsys):
  x0, target = jnp.zeros((1, 4, 4, 3)), jnp.full((1, 4, 4, 3), 0.5)
  cfg = OptimConfig(optimizer="adam", learning_rate=0.01, num_iters=6, chunk=2)
  res = optimize.run(_quadratic, x0, 1.0, target, cfg, desc="lvl")
  lines = _lines(capsys.readouterr().err)
  assert any("compiling..." in l for l in lines)
  total = res.history["total"].reshape(-1)
  for it in (2, 4):  # each drawn line carries the last recorded row of the chunk that ended
    at = [l for l in lines if f"{it}/6" in l and "total=" in l]
    assert at and all(f"total={total[it - 1]:.4g}" in l for l in at), (it, at)
  final = [l for l in lines if "100%" in l]
  assert len(final) == 1 and f"total={total[-1]:.4g}" in final[0], lines


def test_no_compiling_note_when_there_is_nothing_to_run(eager_bar, capsys):
  cfg = OptimConfig(optimizer="adam", num_iters=0, chunk=2)
  optimize.run(_quadratic, jnp.zeros((1, 4, 4, 3)), 1.0, jnp.ones((1, 4, 4, 3)), cfg)
  assert "compiling" not in capsys.readouterr().err


class _Stop(Exception):
  pass


def test_resume_says_where_it_resumes_and_the_checkpoint_goes_away(tmp_path, capsys):
  ckpt = tmp_path / ".out.png.ckpt"  # hidden next to the output, as the commands do
  target = jnp.full((1, 4, 4, 3), 0.5)
  stage = driver.Stage(OptimConfig(optimizer="adam", learning_rate=0.01, num_iters=6, chunk=2),
                       lambda prev: (jnp.zeros((1, 4, 4, 3)), target), "level 1/1 4px")

  def interrupt(stage_index, it, x, aux):
    if it == 4:
      raise _Stop

  with pytest.raises(_Stop):
    driver.run_stages(_quadratic, 1.0, [stage], digest_="d", checkpoint=ckpt,
                      checkpoint_every=2, progress=False, on_chunk=interrupt)
  assert ckpt.exists()  # the hidden checkpoint (an orbax folder)
  capsys.readouterr()
  res = driver.run_stages(_quadratic, 1.0, [stage], digest_="d", checkpoint=ckpt,
                          checkpoint_every=2, progress=True)
  err = capsys.readouterr().err
  assert f"level 1/1 4px: resuming from iteration 4 (checkpoint {ckpt})" in err
  assert len(res.history["total"]) == 6 and not ckpt.exists()  # removed once complete
  quiet = driver.run_stages(_quadratic, 1.0, [stage], digest_="d", checkpoint=ckpt,
                            checkpoint_every=2, progress=True)
  assert "resuming" not in capsys.readouterr().err  # a fresh run says nothing
  np.testing.assert_allclose(quiet.history["total"], res.history["total"], rtol=1e-5)
