"""One settings object, read from defaults, then a TOML file, then ``ANYMODA_*`` environment variables.

The config file is ``$ANYMODA_CONFIG`` if set, else ``<home>/config.toml`` (home defaults to
``~/.anymoda``). Every key is documented in ``docs/configuration.md``; an example::

    device = "cuda"               # auto | cpu | cuda | cuda:1 | mps
    memory_budget = "6GiB"        # models beyond this are evicted least-recently-used first
    offline = true                # never try the Hugging Face hub

    [models]                      # per-tool model override: hub id or local path
    speech-recognition = "Systran/faster-whisper-small"

    [limits]
    max_image_pixels = 40000000
"""

from __future__ import annotations

import math
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .codecs import MediaLimits
from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4,
          "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "ki": 1024, "mi": 1024**2,
          "gi": 1024**3, "ti": 1024**4}


def parse_size(value: Any, what: str = "size") -> int:
    """'6GiB', '512 MB', 1073741824 -> bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a size like '4GiB', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # TOML has nan and inf
            raise ConfigError(f"{what} must be a size like '4GiB', got {value!r}")
        if value < 0:
            raise ConfigError(f"{what} must not be negative, got {value!r}")
        return int(value)
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what} must be a size like '4GiB' or '512MB', got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _parse_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def _default_budget() -> int:
    try:
        import psutil

        total = psutil.virtual_memory().total
    except Exception:
        total = 8 * 1024**3
    return int(total * 0.5)


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path("~/.anymoda").expanduser())
    device: str = "auto"
    memory_budget: int = field(default_factory=_default_budget)
    offline: bool = False
    models: dict[str, str] = field(default_factory=dict)
    limits: MediaLimits = field(default_factory=MediaLimits)
    torch_threads: int | None = None

    @property
    def store_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def model_for(self, tool_name: str, default: str) -> str:
        return self.models.get(tool_name, default)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        home = Path(env.get("ANYMODA_HOME", "~/.anymoda")).expanduser()
        path = Path(config_file or env.get("ANYMODA_CONFIG") or home / "config.toml").expanduser()
        if config_file is not None or env.get("ANYMODA_CONFIG"):  # set but empty means unset, as for the path above
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
        if path.is_file():
            try:
                values.update(tomllib.loads(path.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        values.setdefault("home", str(home))
        if "ANYMODA_HOME" in env:
            values["home"] = env["ANYMODA_HOME"]
        for key in ("device", "memory_budget", "offline", "torch_threads"):
            if f"ANYMODA_{key.upper()}" in env:
                values[key] = env[f"ANYMODA_{key.upper()}"]
        if "offline" not in values and env.get("HF_HUB_OFFLINE"):
            values["offline"] = env["HF_HUB_OFFLINE"]
        # A [models] or [limits] that is not a table is left for from_dict to report.
        models = values.get("models", {})
        if isinstance(models, dict):
            models = dict(models)
            for name, value in env.items():
                if name.startswith("ANYMODA_MODEL_"):
                    models[name[len("ANYMODA_MODEL_"):].lower().replace("_", "-")] = value
        values["models"] = models
        for name, value in env.items():
            if name.startswith("ANYMODA_LIMIT_") and isinstance(values.setdefault("limits", {}), dict):
                values["limits"][name[len("ANYMODA_LIMIT_"):].lower()] = value
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        settings = cls()
        updates: dict[str, Any] = {}
        if "home" in values:
            updates["home"] = Path(str(values["home"])).expanduser()
        if "device" in values:
            device = str(values["device"]).strip().lower()
            if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
                raise ConfigError(f"{source}: device must be auto, cpu, cuda, cuda:N or mps, got {values['device']!r}")
            updates["device"] = device
        if "memory_budget" in values:
            updates["memory_budget"] = parse_size(values["memory_budget"], f"{source}: memory_budget")
            if updates["memory_budget"] <= 0:  # the model pool could not load anything
                raise ConfigError(f"{source}: memory_budget must be positive, got {values['memory_budget']!r}")
        if "offline" in values:
            updates["offline"] = _parse_bool(values["offline"], f"{source}: offline")
        if "torch_threads" in values and values["torch_threads"] not in (None, ""):
            try:
                threads = int(values["torch_threads"])
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: torch_threads must be an integer, got {values['torch_threads']!r}") from None
            if threads < 1:
                raise ConfigError(f"{source}: torch_threads must be at least 1")
            updates["torch_threads"] = threads
        if "models" in values:
            if not isinstance(values["models"], dict) or not all(isinstance(v, str) for v in values["models"].values()):
                raise ConfigError(f"{source}: [models] must map tool names to model ids or paths (strings)")
            updates["models"] = dict(values["models"])
        if "limits" in values:
            limits = values["limits"]
            limit_fields = {f.name: f.type for f in fields(MediaLimits)}
            if not isinstance(limits, dict) or set(limits) - set(limit_fields):
                raise ConfigError(f"{source}: [limits] keys must be among {', '.join(limit_fields)}")
            parsed = {}
            for key, value in limits.items():
                try:
                    number = parse_size(value, key) if key == "max_bytes" else float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{source}: limits.{key} must be a number, got {value!r}") from None
                if not math.isfinite(number) or number <= 0:  # float() takes 'nan' and 'inf'
                    raise ConfigError(f"{source}: limits.{key} must be a positive number, got {value!r}")
                parsed[key] = number if key == "max_audio_seconds" else int(number)
            updates["limits"] = replace(settings.limits, **parsed)
        return replace(settings, **updates)


_current: Settings | None = None
_current_lock = threading.Lock()


def current_settings() -> Settings:
    """The process's settings, loaded from the config file and environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Settings.load()
        return _current


def use_settings(settings: Settings | None) -> None:
    """Replace the process's settings (None: reload from file and environment on next use)."""
    global _current
    with _current_lock:
        _current = settings
