"""Gateway settings, read once from the environment (prefix ``SHOPREC_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoprec.featurestore.tables import ArticleDisplay
from shoprec.gateway.logs import LogFormat


class Settings(BaseSettings):
    """Everything the gateway process is configured with.

    Each field reads ``SHOPREC_<FIELD>`` (case-insensitive), e.g. ``SHOPREC_TRITON_URL``.
    Timeouts are seconds and bound every upstream call, so an unreachable dependency turns into
    a 503 after at most that long, never a hang.

    Raises:
        pydantic.ValidationError: a timeout is not positive, or ``default_k`` is outside
            ``1..max_k``.
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

    def environment(self) -> dict[str, str]:
        """These settings as the ``SHOPREC_*`` variables that reproduce them in another process
        (unset optional fields are left out)."""
        return {
            f"SHOPREC_{name.upper()}": str(value)
            for name, value in self.model_dump(mode="json").items()
            if value is not None
        }

    @model_validator(mode="after")
    def _default_k_within_max_k(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is larger than max_k={self.max_k}")
        return self
