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

    [planner]                     # the LLM that plans (and, unless [composer] says otherwise, writes answers)
    backend = "openai"            # local (default: the packaged Qwen2.5-Coder-0.5B) | openai (any compatible endpoint)
    model = "qwen2.5-7b-instruct"
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "OPENAI_API_KEY"  # the key is read from this environment variable, never from the file

Shared state and a cluster (the ``ray`` extra; see docs/ARCHITECTURE.md, "Scaling out")::

    store = "s3://anymoda-artifacts/prod"          # blobs; endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
    database = "postgresql://anymoda@db:5432/anymoda"  # index, journal, checkpoints; password from PGPASSWORD

    [runner]
    kind = "ray"                  # local (a thread pool, the default) | ray
    address = "auto"              # auto | HOST:PORT | ray://HOST:PORT
"""

from __future__ import annotations

import enum
import math
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, shown
from .storage.codecs import MediaLimits


class PartDefault(enum.Enum):
    """The default of a part that can be passed in (the Orchestrator's planner and composer, the Planner's demos and
    tool-selector head): anymoda builds it when first needed, from the settings and the shipped data. ``None`` is
    always "none"; a typed default rather than a string, so no value a caller passes can be mistaken for it."""

    BUILT = "built by anymoda when first needed"


DEFAULT = PartDefault.BUILT

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


LLM_BACKENDS = ("local", "openai")


@dataclass(frozen=True)
class LLMSettings:
    """Which LLM a role ([planner], [composer]) uses: ``local`` runs a causal LM in this process (``model``
    a hub id or local folder; empty: the packaged Qwen2.5-Coder-0.5B), ``openai`` speaks to an
    OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server) at ``base_url`` with the key from the
    environment variable ``api_key_env``."""

    backend: str = "local"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 300.0
    max_retries: int = 3  # for 429 and 5xx answers and dropped connections, with exponential backoff

    @classmethod
    def parse(cls, value: Any, source: str) -> LLMSettings:
        """A table, or a spec string: ``local``, ``local:MODEL`` or ``openai:BASE_URL#MODEL``."""
        if isinstance(value, str):
            kind, _, rest = value.strip().partition(":")
            if kind == "local":
                return cls("local", rest)
            if kind == "openai":
                url, _, model = rest.partition("#")
                value = {"backend": "openai", "base_url": url, "model": model}
            else:
                raise ConfigError(f"{source}: write local, local:MODEL or openai:BASE_URL#MODEL, got {shown(value)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source} must be a table or a spec string")
        known = {f.name for f in fields(cls)}
        if set(value) - known:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(set(value) - known))}; "
                              f"known: {', '.join(sorted(known))}")
        backend = str(value.get("backend", "local")).strip().lower()
        if backend not in LLM_BACKENDS:
            raise ConfigError(f"{source}.backend must be one of {', '.join(LLM_BACKENDS)}, got {value.get('backend')!r}")
        parsed = cls(backend, str(value.get("model", "")).strip(), str(value.get("base_url", "")).strip(),
                     str(value.get("api_key_env", "OPENAI_API_KEY")).strip())
        try:
            timeout = float(value.get("timeout", parsed.timeout))
            retries = int(value.get("max_retries", parsed.max_retries))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: timeout and max_retries must be numbers") from None
        if not (math.isfinite(timeout) and 0 < timeout <= 3600) or not 0 <= retries <= 10:
            raise ConfigError(f"{source}: timeout must be in (0, 3600] seconds and max_retries in [0, 10]")
        if backend == "openai":
            if not re.match(r"^https?://[^\s/]+", parsed.base_url):
                raise ConfigError(f"{source}.base_url must be an http(s) URL for backend openai, got {parsed.base_url!r}")
            if not parsed.model:
                raise ConfigError(f"{source}.model must name the endpoint's model for backend openai")
        if parsed.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parsed.api_key_env):
            raise ConfigError(f"{source}.api_key_env must be an environment variable name, got {parsed.api_key_env!r}")
        return replace(parsed, timeout=timeout, max_retries=retries)

    def spec(self) -> str:
        if self.backend == "openai":
            return f"openai:{self.base_url}#{self.model}"
        return "local" + (f":{self.model}" if self.model else "")


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path("~/.anymoda").expanduser())
    device: str = "auto"
    memory_budget: int = field(default_factory=_default_budget)
    offline: bool = False
    models: dict[str, str] = field(default_factory=dict)
    limits: MediaLimits = field(default_factory=MediaLimits)
    torch_threads: int | None = None
    planner: LLMSettings = field(default_factory=LLMSettings)
    composer: LLMSettings | None = None  # None: the planner's LLM writes the answers too
    # A run's driver renews its lease in the journal every quarter of this; another process may take the
    # run over only once the lease is this old (at once when the owner is a dead process on this host).
    run_lease_s: float = 60.0
    # Shared state: '' keeps the embedded default (blobs under <home>/artifacts, SQLite files in the home).
    store: str = ""      # a folder, or s3://bucket/prefix for S3-compatible object storage
    database: str = ""   # a postgresql:// URL for the artifact index, run journal and checkpoints
    runner: Any = None   # RunnerSettings; None: the thread pool (kind "local")

    @property
    def store_dir(self) -> Path:
        """The local folder of the artifact store (its blob cache when blobs live in object storage)."""
        if self.store and not self.store.startswith("s3://"):
            return Path(self.store).expanduser()
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
        for key in ("planner", "composer"):  # a spec string: local, local:MODEL, openai:BASE_URL#MODEL
            if env.get(f"ANYMODA_{key.upper()}"):
                values[key] = env[f"ANYMODA_{key.upper()}"]
        for key in ("device", "memory_budget", "offline", "torch_threads", "run_lease_s", "store", "database"):
            if f"ANYMODA_{key.upper()}" in env:
                values[key] = env[f"ANYMODA_{key.upper()}"]
        if env.get("ANYMODA_RUNNER"):  # the runner's kind; ANYMODA_RAY_ADDRESS its address
            runner = values.get("runner", {})
            values["runner"] = {**(runner if isinstance(runner, dict) else {}), "kind": env["ANYMODA_RUNNER"]}
        if env.get("ANYMODA_RAY_ADDRESS") and isinstance(values.get("runner", {}), dict):
            values["runner"] = {**values.get("runner", {}), "address": env["ANYMODA_RAY_ADDRESS"]}
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
        # Where a bad value may have come from: the file (when there is one) and the variables that were set.
        variables = sorted(n for n in env if n.startswith("ANYMODA_") and n not in ("ANYMODA_HOME", "ANYMODA_CONFIG")
                           and env[n] != "")
        sources = [str(path)] if path.is_file() else []
        if variables:
            sources.append(f"the environment ({', '.join(variables[:4])}{', ...' if len(variables) > 4 else ''})")
        return cls.from_dict(values, source=" or ".join(sources) or str(path))

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
        if "run_lease_s" in values:
            try:
                if isinstance(values["run_lease_s"], bool):  # float(True) would be a 1 s lease
                    raise TypeError
                lease = float(values["run_lease_s"])
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: run_lease_s must be a number of seconds, got {values['run_lease_s']!r}") from None
            if not (math.isfinite(lease) and 0.1 <= lease <= 86400):  # float() takes 'nan' and 'inf'
                raise ConfigError(f"{source}: run_lease_s must be between 0.1 and 86400 seconds, got {values['run_lease_s']!r}")
            updates["run_lease_s"] = lease
        if values.get("store") not in (None, ""):
            store = str(values["store"]).strip()
            if store.startswith("s3:"):
                from .backends.locations import parse_s3_url

                store = parse_s3_url(store, f"{source}: store").url
            elif len(store) > 4096 or "\x00" in store or "://" in store:
                raise ConfigError(f"{source}: store must be a folder or s3://BUCKET/PREFIX, got {store[:200]!r}")
            updates["store"] = store
        if values.get("database") not in (None, ""):
            from .backends.locations import check_database_url

            updates["database"] = check_database_url(str(values["database"]), f"{source}: database")
        if values.get("runner") not in (None, ""):
            from .backends.locations import RunnerSettings

            updates["runner"] = RunnerSettings.parse(values["runner"], source)
        for role in ("planner", "composer"):
            if values.get(role) not in (None, ""):
                updates[role] = LLMSettings.parse(values[role], f"{source}: [{role}]")
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
