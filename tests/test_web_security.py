"""Secrets, signed client tokens, CSRF binding and the token-bucket rate limiter."""

import stat
import threading

import pytest

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command

from nst_jax.web import security
from nst_jax.web.security import RateLimiter, Signer


def test_secret_file_is_made_once_private_and_reused(tmp_path, monkeypatch):
  monkeypatch.delenv(security.SECRET_ENV, raising=False)
  data = tmp_path / "data"
  first = security.load_secret(data)
  path = data / security.SECRET_FILE
  assert len(first) >= 32
  assert stat.S_IMODE(path.stat().st_mode) == 0o600
  assert security.load_secret(data) == first
  assert [p.name for p in data.iterdir()] == [security.SECRET_FILE]  # no temp file left
  assert security.load_secret(tmp_path / "other") != first


def test_secret_from_environment_wins(tmp_path, monkeypatch):
  monkeypatch.setenv(security.SECRET_ENV, "from-the-environment-0123456789")
  assert security.load_secret(tmp_path) == "from-the-environment-0123456789"
  assert not (tmp_path / security.SECRET_FILE).exists()


def test_concurrent_first_start_agrees_on_one_secret(tmp_path, monkeypatch):
  monkeypatch.delenv(security.SECRET_ENV, raising=False)
  found = []
  threads = [threading.Thread(target=lambda: found.append(security.load_secret(tmp_path)))
             for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(found) == 8 and len(set(found)) == 1


def test_empty_secret_file_is_an_error(tmp_path, monkeypatch):
  monkeypatch.delenv(security.SECRET_ENV, raising=False)
  (tmp_path / security.SECRET_FILE).write_text("\n")
  with pytest.raises(ValueError, match="too short"):
    security.load_secret(tmp_path)


def test_client_tokens_round_trip_and_are_unique():
  signer = Signer("s" * 40)
  tokens = {signer.new_client_token() for _ in range(50)}
  ids = {signer.client_id(t) for t in tokens}
  assert len(tokens) == 50 and len(ids) == 50 and None not in ids
  assert Signer("s" * 40).client_id(next(iter(tokens))) is not None  # stateless


def test_forged_and_garbage_tokens_give_none():
  signer = Signer("s" * 40)
  token = signer.new_client_token()
  client, sig = token.split(".")
  other = Signer("another secret of some length")
  forged_id = ("A" if client[0] != "A" else "B") + client[1:]
  for bad in [None, "", "garbage", token + "x", f"{forged_id}.{sig}", client, f"{client}.",
              other.new_client_token(), "é" * 10, "x" * 10_000, f"../../etc.{sig}"]:
    assert signer.client_id(bad) is None, bad
  # A value signed with the right secret under another purpose (the CSRF salt) is no client.
  assert signer.client_id(f"{client}.{signer.csrf_token(client)}") is None


def test_csrf_is_bound_to_the_client():
  signer = Signer("s" * 40)
  alice = signer.client_id(signer.new_client_token())
  bob = signer.client_id(signer.new_client_token())
  token = signer.csrf_token(alice)
  assert signer.check_csrf(alice, token)
  assert not signer.check_csrf(bob, token)
  assert not signer.check_csrf(alice, signer.csrf_token(bob))
  assert not Signer("another secret of some length").check_csrf(alice, token)
  for bad in [None, "", "garbage", token[:-1], token + "A", "é", "x" * 10_000]:
    assert not signer.check_csrf(alice, bad)
  assert not signer.check_csrf("", token)


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate():
  clock = FakeClock()
  limiter = RateLimiter(rate_per_minute=6, burst=3, clock=clock)  # one token per 10 s
  assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
  assert limiter.allow("b")  # keys are independent
  clock.now += 9.9
  assert not limiter.allow("a")
  clock.now += 0.1
  assert limiter.allow("a") and not limiter.allow("a")
  clock.now += 3600  # a long quiet period refills up to the burst, not beyond
  assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_refused_requests_do_not_drain_the_bucket():
  clock = FakeClock()
  limiter = RateLimiter(rate_per_minute=60, burst=1, clock=clock)
  assert limiter.allow("k")
  for _ in range(100):
    clock.now += 0.001
    limiter.allow("k")
  clock.now += 1.0
  assert limiter.allow("k")


def test_bucket_is_thread_safe():
  clock = FakeClock()  # time stands still: exactly `burst` requests may pass
  limiter = RateLimiter(rate_per_minute=60, burst=100, clock=clock)
  allowed = []
  def hammer():
    allowed.append(sum(limiter.allow("shared") for _ in range(200)))
  threads = [threading.Thread(target=hammer) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sum(allowed) == 100


def test_many_idle_keys_are_pruned():
  clock = FakeClock()
  limiter = RateLimiter(rate_per_minute=60, burst=2, clock=clock)
  for i in range(RateLimiter.PRUNE_AT):
    limiter.allow(f"k{i}")
  clock.now += 10  # every bucket is full again
  limiter.allow("one more")
  assert len(limiter) <= 2


def test_bad_limiter_settings():
  with pytest.raises(ValueError):
    RateLimiter(rate_per_minute=0, burst=1)
  with pytest.raises(ValueError):
    RateLimiter(rate_per_minute=10, burst=0)
