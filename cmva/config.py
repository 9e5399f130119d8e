"""Settings read from the environment.

Storage settings use the same variable names that KServe injects into a predictor from an S3 Secret
annotated with `serving.kserve.io/s3-endpoint` / `s3-usehttps` / `s3-verifyssl` / `s3-region`, so one
Secret configures training (KFP components), `cmva` on a laptop and the model servers alike.
"""

from __future__ import annotations

from urllib.parse import urlparse

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """How to reach MinIO / S3.

    `AWS_ENDPOINT_URL` (scheme included) wins over `S3_ENDPOINT` (host:port) + `S3_USE_HTTPS`.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    endpoint_url: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL"))
    endpoint: str | None = Field(default=None, validation_alias=AliasChoices("S3_ENDPOINT"))
    use_https: bool = Field(default=True, validation_alias=AliasChoices("S3_USE_HTTPS"))
    verify_ssl: bool = Field(default=True, validation_alias=AliasChoices("S3_VERIFY_SSL"))
    access_key: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"))
    secret_key: str | None = Field(default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"))
    region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # Bounded retries: an unreachable endpoint fails in about
    # sum(backoff * 2**i) seconds instead of hanging a pipeline step.
    max_retries: int = Field(default=4, validation_alias=AliasChoices("CMVA_S3_MAX_RETRIES"))
    backoff_s: float = Field(default=0.5, validation_alias=AliasChoices("CMVA_S3_BACKOFF_S"))
    timeout_s: float = Field(default=10.0, validation_alias=AliasChoices("CMVA_S3_TIMEOUT_S"))

    def host_and_tls(self) -> tuple[str, bool]:
        """The `host:port` and TLS flag for the minio client.

        Raises:
            ValueError: If no endpoint is configured.
        """
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            if not u.netloc:
                raise ValueError(f"AWS_ENDPOINT_URL must include a scheme: {self.endpoint_url!r}")
            return u.netloc, u.scheme == "https"
        if self.endpoint:
            return self.endpoint.removeprefix("http://").removeprefix("https://"), self.use_https
        # AWS itself when nothing is set, as KServe does.
        return "s3.amazonaws.com", True
