"""Secrets, signed client tokens, CSRF tokens and a per-client rate limiter.

Synopsis::

  from nst_jax.web import security
  signer = security.Signer(security.load_secret(data_dir))
  token = signer.new_client_token()          # set as a cookie on the first visit
  client = signer.client_id(cookie)          # None if missing, forged or garbage
  form_token = signer.csrf_token(client)     # put into every form
  signer.check_csrf(client, posted_token)    # False for another client's token
  limiter = security.RateLimiter(rate_per_minute=30, burst=10)
  limiter.allow(client)                      # token bucket per key, thread-safe
  signer.network_key("203.0.113.7")          # the per-IP limits' key (an IPv6 /64 is one)

Clients are anonymous: the signed cookie carries a random id and is the only proof of ownership of
jobs and gallery items (itsdangerous HMAC signatures; the secret never leaves the data folder).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import threading
import time
from pathlib import Path

import itsdangerous

SECRET_ENV = "NST_JAX_SECRET"
SECRET_FILE = "secret.key"
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)
_MAX_TOKEN_CHARS = 200


def load_secret(data_dir: Path) -> str:
  """The signing secret: $NST_JAX_SECRET, else ``data_dir/secret.key`` (made once, mode 0600).

  Several processes (web, workers) may start at once: the file appears complete or not at all
  (written beside it, then hard-linked into place, which fails if another process won).
  """
  env = os.environ.get(SECRET_ENV, "").strip()
  if env:
    return env
  data_dir = Path(data_dir)
  path = data_dir / SECRET_FILE
  if not path.exists():
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
      with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
        f.flush()
        os.fsync(f.fileno())
      try:
        os.link(tmp, path)
      except FileExistsError:
        pass
    finally:
      tmp.unlink()
  secret = path.read_text().strip()
  if len(secret) < 16:
    raise ValueError(f"the secret in {path} is empty or too short; delete it to make a new one")
  return secret


class Signer:
  """Signs anonymous client ids and derives per-client CSRF tokens (itsdangerous HMAC)."""

  def __init__(self, secret: str):
    self._clients = itsdangerous.Signer(secret, salt="nst-jax.client")
    self._csrf = itsdangerous.Signer(secret, salt="nst-jax.csrf")
    self._network_secret = hashlib.sha256(b"nst-jax.network" + secret.encode()).digest()

  def new_client_token(self) -> str:
    """A fresh random client id, signed: the value of the client cookie."""
    return self._clients.sign(secrets.token_urlsafe(16)).decode()

  def client_id(self, token: str | None) -> str | None:
    """The client id inside a token, or None if it is missing, forged or malformed."""
    if not token or not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
      return None
    try:
      value = self._clients.unsign(token).decode()
    except (itsdangerous.BadSignature, UnicodeError):
      return None
    return value if _CLIENT_ID.fullmatch(value) else None

  def network_key(self, address: str | None) -> str:
    """A keyed hash of the client's network (an IPv4 address, an IPv6 /64: one household or
    one machine's many addresses), so the database keeps no IP address in the clear."""
    try:
      ip = ipaddress.ip_address((address or "").strip())
      net = str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
    except ValueError:
      net = (address or "unknown")[:100]
    return hmac.new(self._network_secret, net.encode(), hashlib.sha256).hexdigest()[:32]

  def csrf_token(self, client_id: str) -> str:
    """The CSRF token of a client: an HMAC of its id, so it is worthless to any other client."""
    return self._csrf.get_signature(client_id).decode()

  def check_csrf(self, client_id: str, token: str | None) -> bool:
    """Whether ``token`` is this client's CSRF token (constant-time comparison)."""
    if not client_id or not token or not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
      return False
    try:
      return self._csrf.verify_signature(client_id, token)
    except (itsdangerous.BadSignature, UnicodeError):
      return False


class RateLimiter:
  """A token bucket per key: ``burst`` requests at once, refilled at ``rate_per_minute``.

  Args:
    rate_per_minute: sustained requests per minute per key.
    burst: bucket size (requests allowed at once after a quiet period).
    clock: seconds, monotonic; tests pass a fake clock.
  """

  PRUNE_AT = 10_000  # keys; full buckets are forgotten past this (they equal a fresh key)

  def __init__(self, rate_per_minute: int, burst: int, clock=time.monotonic):
    if rate_per_minute <= 0 or burst < 1:
      raise ValueError("rate_per_minute must be > 0 and burst >= 1")
    self.rate = rate_per_minute / 60.0  # tokens per second
    self.burst = float(burst)
    self.clock = clock
    self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time)
    self._lock = threading.Lock()

  def allow(self, key: str) -> bool:
    """Takes one token from ``key``'s bucket; False (nothing taken) if it is empty."""
    with self._lock:
      now = self.clock()
      tokens, last = self._buckets.get(key, (self.burst, now))
      tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
      allowed = tokens >= 1.0
      self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
      if len(self._buckets) > self.PRUNE_AT:
        self._prune(now)
      return allowed

  def __len__(self) -> int:
    """The number of keys tracked (bounded: idle keys are pruned)."""
    with self._lock:
      return len(self._buckets)

  def _prune(self, now: float) -> None:
    full = [k for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst]
    for k in full:
      del self._buckets[k]
