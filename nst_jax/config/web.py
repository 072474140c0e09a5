"""The web service's configs (``nst-jax serve`` / ``nst-jax worker``)."""

from __future__ import annotations

from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------- web service
WEB_JOB_KINDS = ("fast", "artistic", "photoreal", "sr", "video")


@dataclass(frozen=True)
class WebLimits:
  """What one request or one client may ask of the service (``nst-jax serve``)."""
  max_upload_mb: float = 20.0  # bytes of one uploaded file
  max_upload_pixels: int = 40_000_000  # pixels of one decoded upload (decompression bombs)
  fast_max_size: int = 1024  # long side of a fast stylization's output, px
  slow_max_size: int = 512  # long side of an artistic / photorealistic output, px
  slow_max_iters: int = 500  # iterations of a slow job (per stage)
  sr_max_input: int = 512  # long side of a super-resolution input, px
  rate_per_minute: int = 60  # job submissions per client per minute (burst: the same)
  queue_quota: int = 5  # a client's jobs queued or running at once
  ip_rate_per_minute: int = 120  # job submissions per IP address per minute (burst: the same)
  ip_queue_quota: int = 20  # jobs queued or running at once from one IP address
  max_queued: int = 500  # jobs queued or running at once in all (beyond: 503, Retry-After)
  mails_per_hour: int = 10  # completion e-mails per address, and per network, per hour
  decode_budget_mb: int = 400  # decoded pixel bytes of the uploads in flight in the web process
  max_decodes: int = 2  # uploads decoded at once in the web process (the rest wait)
  decode_wait_s: float = 20.0  # an upload waits this long for the decode budget, then 503
  video_max_seconds: float = 10.0  # length of an uploaded clip (video jobs)
  video_max_frames: int = 300  # frames of an uploaded clip, whatever its header says
  video_max_size: int = 512  # long side of a video job's output frames, px


@dataclass(frozen=True)
class SmtpConfig:
  """E-mail on job completion; off while ``host`` is empty."""
  host: str = ""
  port: int = 25
  sender: str = "nst-jax@localhost"
  starttls: bool = False
  username: str = ""
  password: str = ""


@dataclass(frozen=True)
class WebConfig:
  """The web application and its workers (``nst-jax serve`` / ``nst-jax worker``).

  Empty URLs take the embedded defaults under ``data_dir``: SQLite ``nst.db``, a huey SQLite
  queue ``queue.db`` and the content-addressed ``blobs/`` folder. Scale-out: a
  ``postgresql://`` database, a ``redis://`` queue and a shared ``file:///`` storage folder.
  """
  data_dir: str = "nst_web_data"
  database_url: str = ""  # "": sqlite:///<data_dir>/nst.db
  queue_url: str = ""  # "": huey SqliteHuey <data_dir>/queue.db; redis://host:port/db: RedisHuey
  storage_url: str = ""  # "": <data_dir>/blobs; file:///abs/path: a shared folder
  host: str = "127.0.0.1"
  port: int = 8000
  workers: int = 1  # worker processes `serve` starts beside the app
  base_url: str = ""  # links in e-mails; "": http://<host>:<port>
  models_dir: str = ""  # user-trained style networks (.npz or workdirs); "": <data_dir>/models
  styles_dir: str = ""  # the style paintings (<identifier>.jpg) for thumbnails; "": shared data's
  sample_photo: str = ""  # a real photo every style is shown on (Models page); "": none
  poll_s: float = 0.005  # the worker's queue polling interval, seconds (SqliteHuey)
  stale_s: float = 30.0  # a running job whose heartbeat is older is taken over by another worker
  checkpoint_every: int = 20  # slow jobs: iterations between optimizer checkpoints
  slow_optimizer: str = "lbfgsb"  # slow jobs' optimizer: lbfgsb | lbfgs | adam (compiles fastest)
  # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's --forwarded-allow-ips: comma-
  # separated addresses or networks, "*" for any); "": none, the peer's address is the client's.
  forwarded_allow_ips: str = ""
  # Cookies with the Secure flag and HSTS on every answer (behind TLS or a TLS proxy); without
  # it both follow the request's scheme (https, also from a trusted proxy's X-Forwarded-Proto).
  secure_cookies: bool = False
  ssl_certfile: str = ""  # serve HTTPS itself (uvicorn's TLS) with this certificate (PEM) ...
  ssl_keyfile: str = ""  # ... and this private key; "": plain HTTP (TLS left to a proxy)
  # Hides or deletes any gallery item (``Authorization: Bearer <token>``); "": no administrator.
  # $NST_JAX_ADMIN_TOKEN sets it without writing it on a command line.
  admin_token: str = ""
  limits: WebLimits = field(default_factory=WebLimits)
  smtp: SmtpConfig = field(default_factory=SmtpConfig)
