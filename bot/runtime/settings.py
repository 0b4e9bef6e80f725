"""The one settings object, read from the environment and `.env`.  Nothing else reads os.environ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    # Empty values in .env (as .env.example ships them) mean "not set": the default applies.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    telegram_token: SecretStr | None = Field(default=None, alias="TELEGRAM_TOKEN")
    telegram_api_url: str = Field(default="https://api.telegram.org/bot", alias="TELEGRAM_API_URL")
    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list, alias="DISCORD_GUILD_IDS")
    discord_message_content: bool = Field(default=False, alias="EASEL_DISCORD_MESSAGE_CONTENT")

    model: str = Field(default="Tongyi-MAI/Z-Image-Turbo", alias="EASEL_MODEL")
    device: str = Field(default="auto", alias="EASEL_DEVICE")
    # Weights (engine/quantize.py): auto lets the planner pick bf16, int8 or int4 for this card
    quantize: Literal["auto", "none", "int8", "int4"] = Field(default="auto", alias="EASEL_QUANTIZE")
    transformer_file: Path | None = Field(default=None, alias="EASEL_TRANSFORMER_FILE")  # a .gguf transformer
    data_dir: Path = Field(default=Path("data"), alias="EASEL_DATA_DIR")
    daily_quota: int = Field(default=50, ge=0, alias="EASEL_DAILY_QUOTA")
    role_quotas: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict, alias="EASEL_ROLE_QUOTAS")
    max_pending: int = Field(default=3, ge=1, alias="EASEL_MAX_PENDING")
    max_job_cost: int = Field(default=16, ge=0, alias="EASEL_MAX_JOB_COST")  # work units, 0 = no cap
    max_upload_mb: float = Field(default=10.0, gt=0, alias="EASEL_MAX_UPLOAD_MB")  # pictures brought to /draw
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="EASEL_ADMINS")
    allowed_chats: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="EASEL_ALLOWED_CHATS")
    default_language: str = Field(default="en", alias="EASEL_LANGUAGE")
    redis_url: str | None = Field(default=None, alias="EASEL_REDIS_URL", repr=False)  # may hold a password
    metrics_port: int | None = Field(default=None, alias="EASEL_METRICS_PORT")
    log_level: str = Field(default="INFO", alias="EASEL_LOG_LEVEL")

    # Delivery (bot/core/delivery.py): retried with backoff, then swept with growing gaps, then given up
    delivery_retry_s: float = Field(default=2.0, gt=0, alias="EASEL_DELIVERY_RETRY_S")
    delivery_sweep_s: float = Field(default=60.0, gt=0, alias="EASEL_DELIVERY_SWEEP_S")
    max_delivery_sweeps: int = Field(default=10, ge=1, alias="EASEL_MAX_DELIVERY_SWEEPS")

    # Long life (docs/OPERATIONS.md, "Running for months")
    keep_days: float | None = Field(default=None, gt=0, alias="EASEL_KEEP_DAYS")  # None: keep pictures forever
    min_free_gb: float = Field(default=2.0, ge=0, alias="EASEL_MIN_FREE_GB")  # 0: no disk guard
    stop_grace_s: float = Field(default=30.0, ge=0, alias="EASEL_STOP_GRACE_S")

    # Moderation (bot/community/moderation.py)
    blocked_words: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="EASEL_BLOCKED_WORDS")
    blocked_words_file: Path | None = Field(default=None, alias="EASEL_BLOCKED_WORDS_FILE")
    sensitive_words: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="EASEL_SENSITIVE_WORDS")
    sensitive_words_file: Path | None = Field(default=None, alias="EASEL_SENSITIVE_WORDS_FILE")
    nsfw_channels_only: bool = Field(default=False, alias="EASEL_NSFW_CHANNELS_ONLY")
    cooldown_s: float = Field(default=0.0, ge=0, alias="EASEL_COOLDOWN_S")
    strike_limit: int = Field(default=3, ge=0, alias="EASEL_STRIKE_LIMIT")
    strike_window_s: float = Field(default=600.0, gt=0, alias="EASEL_STRIKE_WINDOW_S")
    strike_penalty_s: float = Field(default=1800.0, ge=0, alias="EASEL_STRIKE_PENALTY_S")
    max_chat_terms: int = Field(default=1000, ge=0, alias="EASEL_MAX_CHAT_TERMS")
    styles_file: Path | None = Field(default=None, alias="EASEL_STYLES_FILE")

    # LoRA (engine/loras.py): admins' .safetensors files, used by name with --lora
    lora_dir: Path | None = Field(default=None, alias="EASEL_LORA_DIR")  # None: <EASEL_DATA_DIR>/loras
    max_lora_mb: float = Field(default=512.0, gt=0, alias="EASEL_MAX_LORA_MB")
    max_loaded_loras: int = Field(default=4, ge=3, alias="EASEL_MAX_LOADED_LORAS")
    max_lora_memory_mb: float = Field(default=1024.0, gt=0, alias="EASEL_MAX_LORA_MEMORY_MB")  # loaded adapters

    # Prompt enhancer (bot/core/enhancer.py): any OpenAI-compatible chat endpoint; off when no URL
    enhancer_url: str | None = Field(default=None, alias="EASEL_ENHANCER_URL")
    enhancer_model: str = Field(default="qwen2.5:3b", alias="EASEL_ENHANCER_MODEL")
    enhancer_key: SecretStr | None = Field(default=None, alias="EASEL_ENHANCER_KEY")
    enhancer_timeout_s: float = Field(default=6.0, gt=0, alias="EASEL_ENHANCER_TIMEOUT_S")

    @field_validator("admins", "allowed_chats", "discord_guild_ids", "blocked_words", "sensitive_words", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("role_quotas", mode="before")
    @classmethod
    def _role_map(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = (part.split(":", 1) for part in _split(value))
            return {role.strip(): int(limit) for role, limit in pairs}
        return value

    @field_validator("default_language")
    @classmethod
    def _language(cls, value: str) -> str:
        return "zh" if value.lower().startswith("zh") else "en"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "easel.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def loras_path(self) -> Path:
        """The folder of installed LoRA files (may be missing: no LoRAs)."""
        return self.lora_dir or self.data_dir / "loras"

    @property
    def quantized_path(self) -> Path:
        """Where quantized copies of the model are written once and loaded from afterwards."""
        return self.data_dir / "quantized"

    def weights(self):
        """What to load (engine.quantize.WeightsWanted): the recipe asked for, a GGUF transformer."""
        from engine.quantize import WeightsWanted

        file = str(self.transformer_file.expanduser()) if self.transformer_file else None
        return WeightsWanted(self.quantize, file, self.quantized_path)

    @property
    def styles_path(self) -> Path:
        """Admins' own style presets (TOML); optional."""
        return self.styles_file or self.data_dir / "styles.toml"

    def is_admin(self, platform: str, user_id: str) -> bool:
        return f"{platform}:{user_id}" in self.admins
