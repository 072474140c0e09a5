"""E-mail when a background job is done (plain SMTP, optional STARTTLS and login).

Synopsis::

  from nst_jax.web import mail
  mail.send_job_done("smtp.example.org", 587, "nst-jax@example.org", "me@example.org",
                     "Your style transfer is ready", "See http://host/jobs/42",
                     starttls=True, username="nst", password="...")
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


def check_address(address: str) -> str:
  """Returns ``address`` stripped if it has exactly one '@' with text on both sides and no
  whitespace or line breaks (header injection); raises ValueError otherwise."""
  value = (address or "").strip(" ")
  local, _, domain = value.partition("@")
  if (value.count("@") != 1 or not local or not domain or len(value) > 254
      or any(c.isspace() or ord(c) < 32 or c in "<>,;\"" for c in value)):
    raise ValueError(f"invalid e-mail address: {value[:80]!r}")
  return value


def send_job_done(host: str, port: int, sender: str, to: str, subject: str, body: str, *,
                  starttls: bool = False, username: str | None = None,
                  password: str | None = None, timeout: float = 10) -> None:
  """Sends one plain-text message through an SMTP server.

  Args:
    host, port: the SMTP server.
    sender: the From address.
    to: the recipient (one address; validated).
    subject: one line (line breaks are folded into spaces).
    body: the text, e.g. with the link to the job page.
    starttls: upgrade the connection with STARTTLS before logging in.
    username, password: log in when a username is given.
    timeout: seconds for the connection and each command.

  Raises:
    ValueError: for a malformed address.
    OSError: ``smtplib.SMTPException`` or a socket error when delivery fails.
  """
  msg = EmailMessage()
  if not sender or any(c in sender for c in "\r\n"):
    raise ValueError(f"invalid sender: {str(sender)[:80]!r}")
  msg["From"] = sender
  msg["To"] = check_address(to)
  msg["Subject"] = " ".join(str(subject).split())
  msg["Date"] = formatdate(localtime=False)
  # An explicit domain: make_msgid would otherwise ask DNS for this host's name.
  msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(" >") or "nst-jax.local")
  msg.set_content(body)
  with smtplib.SMTP(host, port, timeout=timeout) as smtp:
    if starttls:
      smtp.starttls()
    if username:
      smtp.login(username, password or "")
    smtp.send_message(msg)
