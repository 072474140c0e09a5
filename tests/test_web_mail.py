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
