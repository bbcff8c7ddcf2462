"""Outgoing email, through the SMTP server of the settings (SMTP_*).

One connection serves a whole run of emails (`Mailer` opens it at the first
one and closes it at the end), STARTTLS unless SMTP_STARTTLS=false, and a
login when SMTP_USER is set. Every failure is an `MailError`: whether it
concerns one address (`refused`) or the server itself, the caller decides.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from types import TracebackType

from veza.settings import get_settings


class MailError(Exception):
    """The email was not accepted. `refused`: the server refused its
    recipient (that address will not work); otherwise the server could not
    be reached or failed, and any email would have."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def enabled() -> bool:
    return bool(get_settings().smtp_host)


class Mailer:
    """`with Mailer() as mailer: mailer.send(message)`."""

    def __init__(self) -> None:
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()  # the emails sent were accepted already

    def send(self, message: EmailMessage) -> None:
        try:
            self._connection().send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"recipient refused: {exc.recipients}", refused=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._smtp = None  # do not reuse a connection in an unknown state
            raise MailError(f"SMTP: {type(exc).__name__}: {exc}") from exc

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            settings = get_settings()
            if not settings.smtp_host:
                raise MailError("SMTP_HOST is not set")
            smtp = smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
            )
            try:
                if settings.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_user:
                    password = settings.smtp_password
                    smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp
