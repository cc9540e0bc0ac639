"""Settings: the only place the environment is read.

One typed section per component; each component receives only its own section, and engines
receive plain keyword arguments built from it. Environment variables use the prefix
``DIGIHUMAN_`` and ``__`` between a section and its field, e.g. ``DIGIHUMAN_LIPSYNC__ENGINE=lite``.
``DIGIHUMAN_DATA_DIR`` and ``DIGIHUMAN_REDIS_URL`` / ``DIGIHUMAN_API_KEY`` are top-level
shortcuts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class LipSyncSettings(BaseModel):
    engine: str = "lite"  # lite | musetalk
    fps: float = 25.0
    face_index: int | None = None  # None: the largest face
    blink: bool = True


class MuseTalkSettings(BaseModel):
    version: str = "v1"  # v1 | v15
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    batch_size: int = 8
    bbox_shift: int = 0
    extra_margin: int = 10  # v1.5
    parsing_mode: str = "jaw"  # v1.5: jaw | raw
    compile: bool = False
    seed: int = 0  # makes the VAE posterior sample reproducible


class TTSSettings(BaseModel):
    engine: str = "auto"  # auto (piper for English, espeak-ng pinyin for Mandarin) | piper | ...
    voice: str | None = None
    language: str | None = None
    max_chars: int = 2000
    openai_base_url: str | None = None
    openai_model: str = "tts-1"
    openai_api_key: SecretStr | None = None
    cosyvoice_url: str | None = None
    reference_audio: str | None = None
    reference_text: str | None = None


class ASRSettings(BaseModel):
    engine: str = "whisper"  # whisper | openai | funasr | ...
    model: str = "base"
    language: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "whisper-1"
    openai_api_key: SecretStr | None = None
    compute_type: str = "int8"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    key_prefix: str = "digihuman:"
    embedded: bool = True  # start an embedded redis when none is reachable (serve only)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8181
    api_key: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    url_allowlist: list[str] = Field(default_factory=list)  # hosts allowed for http(s) fetches
    allow_private_urls: bool = False
    max_text_chars: int = 2000
    max_upload_bytes: int = 200 * 1024 * 1024
    max_audio_seconds: float = 600.0
    request_timeout_s: float = 60.0
    rate_limit_per_minute: int = 60


class JobSettings(BaseModel):
    heartbeat_s: float = 5.0
    reclaim_after_s: float = 30.0
    max_attempts: int = 3
    record_ttl_s: int = 7 * 24 * 3600


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DIGIHUMAN_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path("./data-root")
    redis_url: str | None = None  # shortcut for redis.url
    api_key: SecretStr | None = None  # shortcut for api.api_key
    log_level: str = "INFO"

    lipsync: LipSyncSettings = Field(default_factory=LipSyncSettings)
    musetalk: MuseTalkSettings = Field(default_factory=MuseTalkSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    asr: ASRSettings = Field(default_factory=ASRSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)

    def model_post_init(self, __context: object) -> None:
        if self.redis_url:
            self.redis.url = self.redis_url
        if self.api_key is not None:
            self.api.api_key = self.api_key

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, at an entrypoint."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic accepts field kwargs
