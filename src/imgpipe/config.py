"""Settings read once from the environment at start-up, each with its default and its check.

Every variable is documented once, in .env.example.
"""

import os
from dataclasses import MISSING, dataclass, fields

# AWS quotas, named so the code says which limit it means.
SQS_MAX_WAIT_SECONDS = 20  # longest long poll ReceiveMessage allows
SQS_MAX_BATCH = 10  # most messages ReceiveMessage / DeleteMessageBatch take at once
SQS_MAX_VISIBILITY_SECONDS = 12 * 60 * 60


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    bucket_name: str
    queue_url: str
    region: str = "us-east-1"
    raw_prefix: str = "raw-images/"
    thumb_prefix: str = "thumbnails/"
    thumbnail_size: int = 256
    health_port: int = 8080
    health_host: str = "0.0.0.0"
    workers: int = 2
    wait_time_seconds: int = SQS_MAX_WAIT_SECONDS
    jpeg_quality: int = 80
    webp_quality: int = 80
    max_input_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 100_000_000
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for field in fields(cls):
            name = "AWS_REGION" if field.name == "region" else field.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                if field.default is MISSING:
                    raise ConfigError(f"{name} is required but not set")
                continue
            values[field.name] = _parse(name, raw, field.type)
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        bounds = {
            "THUMBNAIL_SIZE": (self.thumbnail_size, 1, 4096),
            "HEALTH_PORT": (self.health_port, 0, 65535),
            "WORKERS": (self.workers, 1, 64),
            "WAIT_TIME_SECONDS": (self.wait_time_seconds, 1, SQS_MAX_WAIT_SECONDS),
            "JPEG_QUALITY": (self.jpeg_quality, 1, 100),
            "WEBP_QUALITY": (self.webp_quality, 1, 100),
            "MAX_INPUT_BYTES": (self.max_input_bytes, 1, 5 * 1024**3),
            "MAX_PIXELS": (self.max_pixels, 1, 2**31),
        }
        for name, (value, low, high) in bounds.items():
            if not low <= value <= high:
                raise ConfigError(f"{name}={value} is out of range ({low}..{high})")
        for name in ("RAW_PREFIX", "THUMB_PREFIX"):
            if not getattr(self, name.lower()).endswith("/"):
                raise ConfigError(f"{name} must end with '/'")
        if self.raw_prefix.startswith(self.thumb_prefix) or self.thumb_prefix.startswith(
            self.raw_prefix
        ):
            raise ConfigError("RAW_PREFIX and THUMB_PREFIX must not contain each other")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL={self.log_level} is not DEBUG, INFO, WARNING or ERROR")
        if not self.queue_url.startswith(("https://", "http://")):
            raise ConfigError(f"QUEUE_URL={self.queue_url} is not a queue URL")


def _parse(name: str, raw: str, kind):
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    return raw
