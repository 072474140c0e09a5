"""The web service's configs (``nst-jax serve`` / ``nst-jax worker``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nst_jax.config.common import flag_field

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
  host: str = flag_field("", help="send completion e-mails through this SMTP server ('': no "
                         "e-mail)", name="smtp-host", metavar="HOST")
  port: int = flag_field(25, help="the SMTP server's port", name="smtp-port", type="int",
                         metavar="PORT")
  sender: str = flag_field("nst-jax@localhost", help="the e-mails' From address",
                           name="smtp-sender", metavar="ADDRESS")
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
  data_dir: str = flag_field("nst_web_data", help="the data folder (database, queue, images)",
                             metavar="DIR")
  database_url: str = flag_field(  # "": sqlite:///<data_dir>/nst.db
      "", help="SQLAlchemy URL, e.g. postgresql://user@host/nst ('': SQLite in DATA_DIR)",
      metavar="URL")
  queue_url: str = flag_field(  # "": huey SqliteHuey <data_dir>/queue.db; redis://: RedisHuey
      "", help="redis://host:6379/0 for RedisHuey ('': huey's SQLite queue in DATA_DIR)",
      metavar="URL", aliases=("queue",))
  storage_url: str = flag_field(  # "": <data_dir>/blobs; file:///abs/path: a shared folder
      "", help="file:///shared/folder for images shared by several hosts ('': DATA_DIR/blobs)",
      metavar="URL")
  host: str = flag_field("127.0.0.1", help="the address to listen on")
  port: int = flag_field(8000, help="the port to listen on", type="int")
  workers: int = flag_field(1, help="worker processes to start (0: none here)", type="int")
  base_url: str = flag_field(  # "": http://<host>:<port>
      "", help="the public address, for links in e-mails", metavar="URL")
  models_dir: str = ""  # user-trained style networks (.npz or workdirs); "": <data_dir>/models
  styles_dir: str = ""  # the style paintings (<identifier>.jpg) for thumbnails; "": shared data's
  sample_photo: str = ""  # a real photo every style is shown on (Models page); "": none
  poll_s: float = 0.005  # the worker's queue polling interval, seconds (SqliteHuey)
  stale_s: float = 30.0  # a running job whose heartbeat is older is taken over by another worker
  checkpoint_every: int = 20  # slow jobs: iterations between optimizer checkpoints
  slow_optimizer: str = "lbfgsb"  # slow jobs' optimizer: lbfgsb | lbfgs | adam (compiles fastest)
  # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's --forwarded-allow-ips: comma-
  # separated addresses or networks, "*" for any); "": none, the peer's address is the client's.
  forwarded_allow_ips: str = flag_field(
      "", help="proxies (comma-separated addresses or networks) whose X-Forwarded-For and "
      "X-Forwarded-Proto are believed, as uvicorn names it ('': none)", metavar="IPS")
  # Cookies with the Secure flag and HSTS on every answer (behind TLS or a TLS proxy); without
  # it both follow the request's scheme (https, also from a trusted proxy's X-Forwarded-Proto).
  secure_cookies: bool = flag_field(
      False, help="Secure cookies and HSTS: the site is served over TLS (or a TLS proxy)",
      type="switch")
  ssl_certfile: str = flag_field(  # serve HTTPS itself (uvicorn's TLS) with this certificate
      "", help="serve HTTPS with this certificate (and --ssl-keyfile); cookies are then Secure "
      "and HSTS is sent", metavar="PEM")
  ssl_keyfile: str = flag_field(  # "": plain HTTP (TLS left to a proxy)
      "", help="the certificate's private key", metavar="PEM")
  # Hides or deletes any gallery item (``Authorization: Bearer <token>``); "": no administrator.
  # $NST_JAX_ADMIN_TOKEN sets it without writing it on a command line.
  admin_token: str = flag_field(
      "", help="a secret that may hide or delete any gallery item (Authorization: Bearer TOKEN); "
      "$NST_JAX_ADMIN_TOKEN sets it too", metavar="TOKEN")
  limits: WebLimits = field(default_factory=WebLimits)
  smtp: SmtpConfig = field(default_factory=SmtpConfig)
