"""One typed settings object, read from the environment (prefix ``HERALD_``).

With neither ``HERALD_DATABASE_URL`` nor ``HERALD_BROKER_URL`` set, herald runs on its
embedded default: a SQLite file for state and a second SQLite file as the broker
(kombu's SQLAlchemy transport), both in ``HERALD_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

ChannelBackend = Literal["dev"]


class Settings(BaseSettings):
    """Every knob herald reads; the README lists them with their defaults."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    database_url: str | None = None
    broker_url: str | None = None
    data_dir: Path = Path(".herald")

    environments: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["dev", "test", "prod"])
    max_event_bytes: int = 64 * 1024

    # pipeline
    batch_size: int = 500
    max_delivery_attempts: int = 5
    max_task_attempts: int = 5
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    stall_deadline_s: float = 120.0
    recover_interval_s: float = 30.0
    outbox_relay_interval_s: float = 10.0
    outbox_grace_s: float = 30.0

    # broker
    visibility_timeout_s: int = 3600
    broker_key_prefix: str = ""  # Redis: prefix of every key (several herald setups on one Redis)
    publish_timeout_s: float = 10.0
    publish_max_retries: int = 3

    # development channel backend (the only backend of this release)
    backend_fcm: ChannelBackend = "dev"
    backend_apns: ChannelBackend = "dev"
    backend_webpush: ChannelBackend = "dev"
    dev_output: str = ""  # file path, or "-" for stdout; default <data_dir>/dev-channel.jsonl
    dev_delay_ms: int = 0

    log_level: str = "INFO"

    @field_validator("environments", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.broker_url is None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'herald.sqlite'}"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.sqlite'}"

    @property
    def dev_output_path(self) -> str:
        return self.dev_output or str(self.data_dir.resolve() / "dev-channel.jsonl")

    def ensure_data_dir(self) -> None:
        if self.embedded or not self.dev_output:
            self.data_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_data_dir()
    return settings
