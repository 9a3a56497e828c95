"""Runtime configuration: one ``Settings`` read from ``GW_*`` environment variables.

Every default points at the local stack that ``make run`` starts, so a fresh
checkout needs no configuration; a deployment overrides the URLs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

# Private ports, so the local stack never collides with a system Mosquitto/InfluxDB.
DEFAULT_MQTT_PORT = 11883
DEFAULT_INFLUX_PORT = 18086
DEFAULT_API_PORT = 18000
DEVELOPMENT: Final = "development"
# The API signs bearer tokens with this key: HS256 wants at least 256 bits.
MIN_SECRET_LENGTH = 32


class MissingSecretError(RuntimeError):
    """A secret that has no usable default outside development mode was not set."""


class Settings(BaseSettings):
    """All of gridwatch's settings; see the README's Configuration table."""

    model_config = SettingsConfigDict(env_prefix="GW_", extra="ignore")

    env: Literal["development", "production"] = Field(
        DEVELOPMENT, description="development (make run): secrets may be made up; else required"
    )
    state_dir: Path = Field(Path(".gridwatch"), description="where the local stack keeps its state")
    mqtt_url: str = Field(f"mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}", description="broker URL")
    influx_url: str = Field(f"http://127.0.0.1:{DEFAULT_INFLUX_PORT}", description="InfluxDB URL")
    influx_db: str = Field("gridwatch", description="InfluxDB database (1.x) or DBRP-mapped bucket")
    influx_user: str = Field("", description="InfluxDB user (1.x) or any name with a 2.x/3.x token")
    influx_password: str = Field("", description="InfluxDB password, or the 2.x/3.x token")
    influx_retention: str = Field("400d", description="retention of the database's default policy")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite under state_dir")
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    api_secret_key: str = Field("", description="signs bearer tokens; required in production")
    api_token_ttl_s: int = Field(8 * 3600, ge=60, le=30 * 24 * 3600, description="token lifetime")
    api_client_id: str = Field("gridwatch-api", description="fixed id: the cmd_ack session")
    api_command_ttl_s: int = Field(60, ge=1, le=24 * 3600, description="default command expiry")
    api_history_max_points: int = Field(20_000, ge=100, le=1_000_000, description="per request")
    api_history_max_days: int = Field(31, ge=1, le=3650, description="longest history range")
    api_access_log: bool = Field(False, description="log every request (uvicorn's access log)")
    api_keepalive_s: int = Field(
        75, ge=1, le=3600, description="idle keep-alive connections are closed after this"
    )

    ts_max_future_s: int = Field(600, description="reject ts further in the future than this")
    ts_max_age_s: int = Field(7 * 24 * 3600, description="reject ts older than this")
    max_payload_bytes: int = Field(16 * 1024, description="JSON payload limit (contract: 16 KiB)")
    max_snapshot_bytes: int = Field(2 * 1024 * 1024, description="snapshot limit (contract: 2 MiB)")

    ingest_client_id: str = Field("gridwatch-ingest", description="fixed id: persistent session")
    ingest_share_group: str = Field("", description="shared-subscription group; empty = none")
    ingest_batch_size: int = Field(5000, ge=1, le=100_000)
    ingest_flush_ms: int = Field(200, ge=1, le=60_000)
    ingest_inflight: int = Field(20_000, ge=1, le=65_535, description="MQTT receive maximum")
    ingest_metrics_host: str = Field("127.0.0.1", description="where /metrics listens")
    ingest_metrics_port: int = Field(18001, ge=0, le=65535, description="Prometheus; 0 = off")
    registry_refresh_s: float = Field(30.0, gt=0, description="how often ingest reloads devices")

    alerts_client_id: str = Field("gridwatch-alerts", description="fixed id: persistent session")
    alerts_base_url: str = Field("http://127.0.0.1:18000", description="links in notifications")
    alerts_escalate_after_s: int = Field(900, ge=1, description="unacknowledged → managers")
    alerts_send_attempts: int = Field(8, ge=1, le=100, description="tries per notification")
    alerts_send_timeout_s: float = Field(10.0, gt=0, le=120, description="per HTTP attempt")
    alerts_metrics_host: str = Field("127.0.0.1", description="where alerts' /metrics listens")
    alerts_metrics_port: int = Field(18003, ge=0, le=65535, description="Prometheus; 0 = off")

    imagery_dir: str = Field("", description="snapshot files; default: state_dir/imagery")
    imagery_client_id: str = Field("gridwatch-imagery", description="fixed id: persistent session")
    imagery_share_group: str = Field("", description="shared-subscription group; empty = none")
    imagery_inflight: int = Field(8, ge=1, le=1000, description="snapshots held unacknowledged")
    imagery_retention_days: int = Field(30, ge=1, le=3650, description="default image retention")
    imagery_max_pixels: int = Field(4096 * 4096, ge=1, description="largest declared frame")
    imagery_face_width: int = Field(240, ge=64, le=4096, description="faces searched at this width")
    imagery_person_width: int = Field(320, ge=64, le=4096, description="people searched at this")
    imagery_metrics_host: str = Field("127.0.0.1", description="where imagery's /metrics listens")
    imagery_metrics_port: int = Field(18002, ge=0, le=65535, description="Prometheus; 0 = off")
    snapshot_link_key: str = Field("", description="signs snapshot links; required in production")
    snapshot_link_max_days: int = Field(
        30, ge=1, le=3650, description="a snapshot link expires by then, or with its image"
    )

    broker_security: bool = Field(
        True, description="make run: passwords and ACLs; false: anonymous"
    )
    broker_auth_dir: str = Field("", description="password/ACL files; default: state_dir/mosquitto")
    broker_pid_file: str = Field("", description="SIGHUP this broker after writing the files")
    broker_tls_port: int = Field(0, ge=0, le=65535, description="make run: TLS listener; 0 = off")
    # `gridwatch init` sets the service accounts to these (compose: from .env).
    broker_ingest_password: str = Field("", description="gridwatch.ingest's password, for init")
    broker_alerts_password: str = Field("", description="gridwatch.alerts's password, for init")
    broker_api_password: str = Field("", description="gridwatch.api's password, for init")
    broker_imagery_password: str = Field("", description="gridwatch.imagery's password, for init")
    broker_simulator_password: str = Field("", description="gridwatch.simulator's, for init")

    grafana_url: str = Field("", description="an existing Grafana, for `gridwatch dashboards push`")
    grafana_token: str = Field("", description="its service-account token (dashboards: write)")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"mqtt", "mqtts", "tcp"}:
            raise ValueError("GW_MQTT_URL must look like mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("api_secret_key", "snapshot_link_key")
    @classmethod
    def _strong_secret(cls, value: str, info: ValidationInfo) -> str:
        if value and len(value) < MIN_SECRET_LENGTH:
            name = f"GW_{(info.field_name or '').upper()}"
            raise ValueError(f"{name} must have at least {MIN_SECRET_LENGTH} characters")
        return value

    @property
    def development(self) -> bool:
        """True in development mode (``make run``), where secrets may be made up."""
        return self.env == DEVELOPMENT

    def required_api_secret(self) -> str:
        """GW_API_SECRET_KEY, or ``MissingSecretError`` outside development when it is unset."""
        return self._required_secret("api_secret_key", self.api_secret_key)

    def required_snapshot_link_key(self) -> str:
        """GW_SNAPSHOT_LINK_KEY, or ``MissingSecretError`` outside development when it is unset."""
        return self._required_secret("snapshot_link_key", self.snapshot_link_key)

    def _required_secret(self, field: str, value: str) -> str:
        if not value and not self.development:
            raise MissingSecretError(
                f"GW_{field.upper()} is not set: outside development mode (GW_ENV=production) "
                "it has no default; generate one with `openssl rand -hex 32`"
            )
        return value

    @property
    def imagery_root(self) -> Path:
        """The directory imagery's files actually go to."""
        return Path(self.imagery_dir) if self.imagery_dir else self.state_dir / "imagery"

    def service_passwords(self) -> dict[str, str]:
        """The service accounts whose passwords are given (GW_BROKER_<SERVICE>_PASSWORD)."""
        given = {
            "gridwatch.ingest": self.broker_ingest_password,
            "gridwatch.alerts": self.broker_alerts_password,
            "gridwatch.api": self.broker_api_password,
            "gridwatch.imagery": self.broker_imagery_password,
            "gridwatch.simulator": self.broker_simulator_password,
        }
        return {name: password for name, password in given.items() if password}

    @property
    def public_mqtt_url(self) -> str:
        """GW_MQTT_URL without its password (it names the service's broker account): for logs."""
        parts = urlsplit(self.mqtt_url)
        if parts.password is None:
            return self.mqtt_url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

    @property
    def public_sql_url(self) -> str:
        """The SQL URL without its password: for logs."""
        return make_url(self.sql_url).render_as_string(hide_password=True)

    @property
    def broker_auth_path(self) -> Path:
        """The directory of the broker's password and ACL files."""
        return Path(self.broker_auth_dir) if self.broker_auth_dir else self.broker_state / "auth"

    @property
    def broker_pid_path(self) -> Path:
        """The pid file of the broker to reload (make run's broker writes it)."""
        return (
            Path(self.broker_pid_file)
            if self.broker_pid_file
            else self.broker_state / "mosquitto.pid"
        )

    @property
    def broker_state(self) -> Path:
        """make run's Mosquitto state directory."""
        return self.state_dir.resolve() / "mosquitto"

    @property
    def sql_url(self) -> str:
        """The SQLAlchemy URL actually used."""
        return self.database_url or f"sqlite:///{self.state_dir / 'gridwatch.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()  # values come from the environment
