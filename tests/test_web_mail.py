"""Job-done e-mail through a real SMTP server (aiosmtpd) on loopback."""

import pytest

pytest.importorskip("nst_jax.web")  # the web extra; the skip names its install command
pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd not installed")

from nst_jax.web import mail


def test_message_is_delivered_with_the_job_link(smtp_server):
  controller, handler, _ = smtp_server
  link = "http://127.0.0.1:8000/jobs/42"
  mail.send_job_done("127.0.0.1", controller.port, "nst-jax@example.org", " me@example.org ",
                     "Your style transfer\nis ready", f"Done! See {link}\n", timeout=5)
  assert len(handler.envelopes) == 1
  env = handler.envelopes[0]
  assert env.mail_from == "nst-jax@example.org"
  assert env.rcpt_tos == ["me@example.org"]
  text = env.content.decode()
  assert "Subject: Your style transfer is ready" in text
  assert "To: me@example.org" in text and "Message-ID: <" in text
  assert link in text


def test_login(smtp_server):
  controller, handler, logins = smtp_server
  mail.send_job_done("127.0.0.1", controller.port, "a@b.org", "c@d.org", "s", "b",
                     username="nst", password="right", timeout=5)
  assert logins == [(b"nst", b"right")] and len(handler.envelopes) == 1
  # A refused login is an OSError (smtplib.SMTPException); after PLAIN fails smtplib tries LOGIN,
  # which this server answers by waiting, hence the short timeout.
  with pytest.raises(OSError):
    mail.send_job_done("127.0.0.1", controller.port, "a@b.org", "c@d.org", "s", "b",
                       username="nst", password="wrong", timeout=0.5)
  assert len(handler.envelopes) == 1


@pytest.mark.parametrize("to", ["", "nobody", "a@b@c.org", "@example.org", "me@",
                                "me@example.org\nBcc: victim@example.org", "me@exa mple.org",
                                "me@example.org\r", "a@b.org, c@d.org"])
def test_bad_recipients_are_refused_before_connecting(to):
  with pytest.raises(ValueError, match="invalid e-mail address"):
    mail.send_job_done("127.0.0.1", 1, "a@b.org", to, "s", "b", timeout=1)


def test_bad_sender_is_refused():
  with pytest.raises(ValueError, match="invalid sender"):
    mail.send_job_done("127.0.0.1", 1, "a@b.org\nBcc: x@y.org", "c@d.org", "s", "b")


def test_unreachable_server_is_an_os_error(free_port):
  with pytest.raises(OSError):
    mail.send_job_done("127.0.0.1", free_port(), "a@b.org", "c@d.org", "s", "b", timeout=2)


def test_the_web_service_refuses_email_without_smtp_limits_it_and_reports_failures(
    tmp_path, free_port):
  """No SMTP: an address is refused (400), not silently dropped. With SMTP: at most
  ``mails_per_hour`` per address; a delivery that fails is on the job page."""
  from fastapi.testclient import TestClient  # pylint: disable=import-outside-toplevel
  from nst_jax import config  # pylint: disable=import-outside-toplevel
  from nst_jax.web import app as web_app  # pylint: disable=import-outside-toplevel
  from nst_jax.web import jobs  # pylint: disable=import-outside-toplevel
  from tests.test_web_app import csrf_of, png_bytes  # pylint: disable=import-outside-toplevel

  def submit(client, **fields):
    return client.post("/api/jobs", data={"model": "starry_small", "size": "48", **fields},
                       files={"content": ("x.png", png_bytes(40, 56))},
                       headers={"X-CSRF-Token": csrf_of(client)})

  client = TestClient(web_app.create_app(config.WebConfig(data_dir=str(tmp_path / "a")),
                                         enqueue=lambda job_id: None))
  r = submit(client, email="me@example.org")
  assert r.status_code == 400 and "no e-mail" in r.json()["detail"]

  cfg = config.WebConfig(data_dir=str(tmp_path / "b"), smtp=config.SmtpConfig(
      host="127.0.0.1", port=free_port()), limits=config.WebLimits(mails_per_hour=2))
  holder = {}
  app = web_app.create_app(cfg, enqueue=lambda job_id: holder["ex"].run(job_id))
  holder["ex"] = jobs.Executor(cfg, db=app.state.service.db, store=app.state.service.store)
  holder["ex"].execute = lambda job, lost: png_bytes(8, 8)  # the mail, not the network, is tested
  client = TestClient(app)
  first = submit(client, email="me@example.org")  # nobody listens on that port
  assert first.status_code == 201
  job = client.get(f"/api/jobs/{first.json()['id']}").json()
  assert job["status"] == "done" and job["email_status"].startswith("failed")
  page = client.get(f"/jobs/{job['id']}").text
  assert 'id="email-status"' in page and "could not be sent" in page
  assert submit(client, email="me@example.org").status_code == 201
  third = submit(client, email="ME@example.org")
  assert third.status_code == 429 and third.headers["retry-after"]
