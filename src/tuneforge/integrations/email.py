"""Job-finished e-mail over SMTP (Settings.smtp_*); the outbox calls `send` for each attempt."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from tuneforge.config import Settings


def enabled(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def compose(settings: Settings, to: str, subject: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """One SMTP attempt; raises OSError / smtplib.SMTPException on failure (the outbox retries)."""
    timeout = settings.delivery_timeout_seconds
    host, port = settings.smtp_host, settings.smtp_port
    if settings.smtp_tls == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    with client:
        if settings.smtp_tls == "starttls":
            client.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_user, password)
        client.send_message(msg)
