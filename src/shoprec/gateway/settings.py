"""Gateway settings, read once from the environment (prefix ``SHOPREC_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import limits
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoprec.events import DEFAULT_DEDUPE_WINDOW_S, DEFAULT_LOG_FILE, DEFAULT_NAMESPACE
from shoprec.events.log import log_backend
from shoprec.featurestore.tables import ArticleDisplay
from shoprec.gateway.keys import ApiKey, read_keys_file
from shoprec.gateway.logs import LogFormat

MAX_EVENTS_PER_BATCH: Final = 1000  # POST /v1/events


class Settings(BaseSettings):
    """Everything the gateway process is configured with.

    Each field reads ``SHOPREC_<FIELD>`` (case-insensitive), e.g. ``SHOPREC_TRITON_URL``.
    Timeouts are seconds and bound every upstream call, so an unreachable dependency turns into
    a 503 after at most that long, never a hang.

    Write API (README "Write API"): ``event_log`` is the durable log's URL
    (``sqlite:///path``, a file path, or ``redis://[:password@]host:port/db``; default
    ``<feature_repo>/../events.db``, i.e. ``models/<name>/events.db``). API keys come from
    ``api_keys`` (JSON list of ``{"name", "role", "sha256"}``) and ``api_keys_file`` (the same
    list in a file, e.g. a Docker secret); writes always need a ``write`` key, reads need a
    key when ``require_read_key``. Rate limits are ``limits`` strings (``"100/second"``) per
    key (per client address without one), kept in ``rate_limit_storage`` (``memory://``, per
    process, or ``redis://...``).

    Raises:
        pydantic.ValidationError: a timeout is not positive, ``default_k`` is outside
            ``1..max_k``, a rate limit or the event log URL does not parse, the events limit
            is below one full batch, or the keys file is invalid.
    """

    model_config = SettingsConfigDict(env_prefix="SHOPREC_", extra="ignore")

    triton_url: str = "127.0.0.1:8001"  # Triton gRPC endpoint, host:port
    triton_timeout_s: float = Field(default=1.0, gt=0)  # per Triton call (infer, readiness)
    store_timeout_s: float = Field(default=1.0, gt=0)  # per feature-store call
    feature_repo: Path = Path("feature_repo")  # Feast repository the store reader opens
    # Redis online store (host:port) overriding the repo's own, e.g. the name a container sees;
    # None reads the store the repo was materialized to.
    redis_url: str | None = None
    # Article display fields: "memory" loads the article table of the feature repo once at start
    # (no store read per request); "store" reads the online store on every request.
    article_display: ArticleDisplay = ArticleDisplay.MEMORY
    default_k: int = Field(default=12, ge=1)  # results when a request gives no ``k``
    # Largest ``k`` a request may ask for. Keep it <= the K the Triton models were exported
    # with: past that, personalised and similar lists hold at most K items.
    max_k: int = Field(default=100, ge=1)

    # ---- limits against slow or hostile clients (shoprec.gateway.server) ----
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # request head, else 431
    max_headers: int = Field(default=100, ge=1)  # header lines per request, else 431
    header_timeout_s: float = Field(default=10.0, gt=0)  # head complete within, else 408
    body_timeout_s: float = Field(default=30.0, gt=0)  # body complete within, else 408
    keepalive_timeout_s: float = Field(default=5.0, gt=0)  # idle keep-alive connection
    max_concurrent_requests: int = Field(default=256, ge=1)  # in the app at once, else 503
    # ---- logging (shoprec.gateway.logs) ----
    log_format: LogFormat = LogFormat.TEXT  # "json": one JSON object per line
    log_level: str = "WARNING"
    access_log: bool = False  # one line per request (uvicorn's access log)
    log_interval_s: float = Field(default=10.0, gt=0)  # one line per failure kind per interval
    # ---- feature store versions (shoprec.featurestore) ----
    store_refresh_s: float = Field(default=2.0, gt=0)  # how often to look for a new version
    # ---- write API: event log ----
    event_log: str | None = None  # None: models/<name>/events.db next to the feature repo
    event_log_namespace: str = DEFAULT_NAMESPACE  # Redis key prefix of the log
    event_log_password_file: Path | None = None  # Redis password, when the URL holds none
    event_dedupe_window_s: int = Field(default=DEFAULT_DEDUPE_WINDOW_S, ge=1)  # Redis only
    write_timeout_s: float = Field(default=5.0, gt=0)  # per write to the log or the store
    erasure_timeout_s: float = Field(default=60.0, gt=0)  # DELETE /v1/customers/{id}
    max_clock_skew_s: float = Field(default=300.0, ge=0)  # events later than now + this: 422
    # ---- access control ----
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_keys_file: Path | None = None
    require_read_key: bool = False  # reads, /docs, /openapi.json and /metrics need a key
    rate_limit_reads: str = "5000/second"  # requests, per key or client
    rate_limit_writes: str = "200/second"  # customer and article writes, per key
    rate_limit_events: str = "20000/second"  # events (a batch counts its events), per key
    rate_limit_storage: str = "memory://"  # limits storage URI
    max_body_bytes: int = Field(default=1 << 20, ge=1024)  # larger request bodies: 413
    cors_origins: list[str] = Field(default_factory=list)  # origins allowed to call reads

    def environment(self) -> dict[str, str]:
        """These settings as the ``SHOPREC_*`` variables that reproduce them in another process
        (unset optional fields are left out; lists and numbers as JSON)."""
        return {
            f"SHOPREC_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in self.model_dump(mode="json").items()
            if value is not None
        }

    def event_log_url(self) -> str:
        """``event_log``, or the embedded default next to the feature repo."""
        return self.event_log or str(self.feature_repo.parent / DEFAULT_LOG_FILE)

    def event_log_password(self) -> str | None:
        """The Redis password of ``event_log_password_file`` (stripped), or None.

        Raises:
            OSError: the file cannot be read.
        """
        if self.event_log_password_file is None:
            return None
        return self.event_log_password_file.read_text().strip()

    def all_api_keys(self) -> list[ApiKey]:
        """``api_keys`` followed by those of ``api_keys_file``.

        Raises:
            KeysFileError: the file is missing or invalid.
        """
        from_file = read_keys_file(self.api_keys_file) if self.api_keys_file else []
        return [*self.api_keys, *from_file]

    @field_validator("rate_limit_reads", "rate_limit_writes", "rate_limit_events")
    @classmethod
    def _parses_as_rate_limit(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(f"not a rate limit like '100/second': {value!r}") from None
        return value

    @field_validator("event_log")
    @classmethod
    def _known_log_backend(cls, value: str | None) -> str | None:
        if value is not None:
            log_backend(value)
        return value

    @model_validator(mode="after")
    def _default_k_within_max_k(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is larger than max_k={self.max_k}")
        return self

    @model_validator(mode="after")
    def _events_limit_admits_a_batch(self) -> Settings:
        limit = limits.parse(self.rate_limit_events)
        if limit.amount < MAX_EVENTS_PER_BATCH:
            raise ValueError(
                f"rate_limit_events={self.rate_limit_events!r} admits fewer events than one "
                f"batch of {MAX_EVENTS_PER_BATCH}"
            )
        return self
