"""Settings of the storefront process, read from ``SHOPREC_STOREFRONT_*`` variables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoCustomer(BaseModel):
    """A customer the demo's picker offers: its id and what the picker shows (e.g.
    ``"longest history (412 purchases)"``)."""

    customer_id: str
    label: str


class StorefrontSettings(BaseSettings):
    """Where the gateway is and how to call it.

    The write key (for ``POST /v1/events``) is read here, on the server, from
    ``SHOPREC_STOREFRONT_WRITE_KEY`` or the file ``SHOPREC_STOREFRONT_WRITE_KEY_FILE`` (a
    Docker secret); it is sent only to the gateway, never to a browser. Without a key the
    shop still browses, but "buy" and "not interested" say that they cannot record events.

    Raises:
        pydantic.ValidationError: a timeout is not positive or a list does not parse.
    """

    model_config = SettingsConfigDict(env_prefix="SHOPREC_STOREFRONT_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8080"
    write_key: SecretStr | None = None
    write_key_file: Path | None = None
    read_key: SecretStr | None = None  # when the gateway requires a read key
    read_key_file: Path | None = None
    timeout_s: float = Field(default=1.0, gt=0)  # per gateway call; then the fallback page
    k: int = Field(default=12, ge=1, le=100)  # articles per list
    demo_customers: list[DemoCustomer] = Field(default_factory=list)  # the picker's choices
    # Stamp events on this day (at the current UTC time of day) instead of today: for a demo on
    # historical data, whose event log is folded into the data by the next `shoprec ingest`
    # (an event years after the rest would move every training window). None: today.
    event_day: date | None = None

    def event_time(self) -> datetime:
        """When an event posted now happened: now (UTC), moved to :attr:`event_day` if set."""
        now = datetime.now(UTC)
        return now if self.event_day is None else datetime.combine(self.event_day, now.timetz())

    def write_secret(self) -> str | None:
        """The write key (the file's content, stripped, when a file is given), or None.

        Raises:
            OSError: the key file cannot be read.
        """
        return _secret(self.write_key, self.write_key_file)

    def read_secret(self) -> str | None:
        """The read key, like :meth:`write_secret`."""
        return _secret(self.read_key, self.read_key_file)


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().strip() or None
    return None if value is None else value.get_secret_value()
