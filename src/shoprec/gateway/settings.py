"""Gateway settings, read once from the environment (prefix ``SHOPREC_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoprec.featurestore.tables import ArticleDisplay


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
