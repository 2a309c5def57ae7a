"""Settings: defaults, then the TOML file, then ANYMODA_* environment variables; every bad value is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Settings, current_settings, parse_size, use_settings
from orchestrator.errors import ConfigError
from orchestrator.storage.codecs import MediaLimits

GiB = 1024**3

CONFIG = """
device = "cpu"
memory_budget = "1GiB"
offline = false
torch_threads = 3

[models]
speech-recognition = "Systran/faster-whisper-small"
image-classification = "google/vit-base-patch16-224"

[limits]
max_image_pixels = 40000000
max_audio_seconds = 60.5
max_bytes = "16MiB"
"""


def config_file(tmp_path: Path, text: str = CONFIG, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path):
    settings = Settings.load(env={"ANYMODA_HOME": str(tmp_path / "home")})
    assert settings.home == tmp_path / "home"
    assert settings.store_dir == tmp_path / "home" / "artifacts" and settings.cache_dir == tmp_path / "home" / "cache"
    assert settings.device == "auto" and settings.offline is False and settings.torch_threads is None
    assert settings.models == {} and settings.limits == MediaLimits()
    assert settings.memory_budget > 0


def test_toml_file_is_read(tmp_path: Path):
    settings = Settings.load(config_file(tmp_path), env={})
    assert settings.device == "cpu" and settings.memory_budget == GiB and settings.offline is False
    assert settings.torch_threads == 3
    assert settings.models == {
        "speech-recognition": "Systran/faster-whisper-small",
        "image-classification": "google/vit-base-patch16-224",
    }
    assert settings.model_for("speech-recognition", "default") == "Systran/faster-whisper-small"
    assert settings.model_for("ocr", "default") == "default"
    assert settings.limits == MediaLimits(max_image_pixels=40_000_000, max_audio_seconds=60.5, max_bytes=16 * 2**20)
    assert isinstance(settings.limits.max_image_pixels, int)


def test_environment_overrides_the_file(tmp_path: Path):
    env = {
        "ANYMODA_DEVICE": "CUDA:1",
        "ANYMODA_MEMORY_BUDGET": "2GiB",
        "ANYMODA_MODEL_SPEECH_RECOGNITION": "/models/whisper-large",
        "ANYMODA_MODEL_TEXT_TO_SPEECH": "en_GB-alan-medium",
        "ANYMODA_LIMIT_MAX_IMAGE_PIXELS": "5000000",
        "ANYMODA_OFFLINE": "yes",
        "ANYMODA_TORCH_THREADS": "2",
        "UNRELATED": "ignored",
    }
    settings = Settings.load(config_file(tmp_path), env=env)
    assert settings.device == "cuda:1"
    assert settings.memory_budget == 2 * GiB
    assert settings.offline is True and settings.torch_threads == 2
    assert settings.models == {
        "speech-recognition": "/models/whisper-large",  # the environment wins
        "image-classification": "google/vit-base-patch16-224",  # the file's other entries stay
        "text-to-speech": "en_GB-alan-medium",
    }
    assert settings.limits.max_image_pixels == 5_000_000
    assert settings.limits.max_audio_seconds == 60.5 and settings.limits.max_bytes == 16 * 2**20  # from the file


def test_config_file_found_through_environment(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    config_file(home)
    assert Settings.load(env={"ANYMODA_HOME": str(home)}).device == "cpu"  # <home>/config.toml
    other = config_file(tmp_path, 'device = "mps"\n', name="other.toml")
    settings = Settings.load(env={"ANYMODA_HOME": str(home), "ANYMODA_CONFIG": str(other)})
    assert settings.device == "mps" and settings.home == home
    assert Settings.load(env={"ANYMODA_HOME": str(home), "ANYMODA_CONFIG": ""}).device == "cpu"  # empty: unset
    assert Settings.load(env={"ANYMODA_HOME": str(tmp_path / "bare"), "ANYMODA_CONFIG": ""}).device == "auto"


def test_home_from_file_and_environment(tmp_path: Path):
    path = config_file(tmp_path, f'home = "{tmp_path / "from-file"}"\n')
    assert Settings.load(path, env={}).home == tmp_path / "from-file"
    assert Settings.load(path, env={"ANYMODA_HOME": str(tmp_path / "from-env")}).home == tmp_path / "from-env"


def test_hf_hub_offline_sets_the_default(tmp_path: Path):
    assert Settings.load(env={"ANYMODA_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}).offline is True
    path = config_file(tmp_path, "offline = false\n")
    assert Settings.load(path, env={"HF_HUB_OFFLINE": "1"}).offline is False  # an explicit setting wins


def test_process_settings_come_from_the_real_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config_file(tmp_path)
    monkeypatch.setenv("ANYMODA_HOME", str(tmp_path))
    monkeypatch.setenv("ANYMODA_MEMORY_BUDGET", "3 GiB")
    monkeypatch.delenv("ANYMODA_CONFIG", raising=False)
    before = current_settings()
    try:
        use_settings(None)
        settings = current_settings()
        assert settings.home == tmp_path and settings.device == "cpu" and settings.memory_budget == 3 * GiB
        assert current_settings() is settings  # loaded once
    finally:
        use_settings(before)
    assert current_settings() is before


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2GiB", 2 * GiB),
        ("2 GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("1.5GiB", int(1.5 * GiB)),
        ("512MB", 512 * 1000**2),
        ("512 MiB", 512 * 2**20),
        ("4k", 4000),
        ("1KiB", 1024),
        ("3 TB", 3 * 1000**4),
        ("2Gi", 2 * GiB),
        ("100b", 100),
        ("1048576", 2**20),
        (1048576, 2**20),
        (0, 0),
        (2.5, 2),
    ],
)
def test_parse_size(text, expected: int):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "value", ["abc", "", "GiB", "5 XB", "-1GiB", "1.2.3GB", "2 GiBs", "0x10", True, -5, float("nan"), float("inf"), None]
)
def test_parse_size_rejects_bad_sizes(value):
    with pytest.raises(ConfigError, match="budget") as caught:
        parse_size(value, "budget")
    assert repr(value) in str(caught.value) or str(value) in str(caught.value)


@pytest.mark.parametrize(
    "text,words",
    [
        ('devise = "cpu"\n', ("unknown setting", "devise")),
        ('device = "gpu"\n', ("device", "'gpu'")),
        ('device = "cuda:"\n', ("device", "'cuda:'")),
        ("device = 1\n", ("device",)),
        ('memory_budget = "lots"\n', ("memory_budget", "'lots'")),
        ("memory_budget = -1\n", ("memory_budget", "negative")),
        ("memory_budget = 0\n", ("memory_budget", "positive")),
        ("memory_budget = nan\n", ("memory_budget", "nan")),
        ("memory_budget = inf\n", ("memory_budget", "inf")),
        ('offline = "maybe"\n', ("offline", "'maybe'")),
        ("torch_threads = 0\n", ("torch_threads", "at least 1")),
        ('torch_threads = "many"\n', ("torch_threads", "'many'")),
        ("[limits]\nmax_image_pixels = -1\n", ("limits.max_image_pixels", "positive")),
        ("[limits]\nmax_audio_seconds = 0\n", ("limits.max_audio_seconds", "positive")),
        ('[limits]\nmax_bytes = "-5MB"\n', ("max_bytes",)),
        ('[limits]\nmax_text_chars = "lots"\n', ("limits.max_text_chars", "'lots'")),
        ("[limits]\nmax_time_series_points = nan\n", ("limits.max_time_series_points",)),
        ("[limits]\nmax_image_pixels = inf\n", ("limits.max_image_pixels",)),
        ("[limits]\nmax_pixels = 5\n", ("[limits]", "max_image_pixels")),
        ("limits = 5\n", ("[limits]",)),
        ("[models]\nocr = 5\n", ("[models]",)),
        ('models = "whisper"\n', ("[models]",)),
        ("models = 5\n", ("[models]",)),
    ],
)
def test_bad_values_in_the_file_are_clear_errors(tmp_path: Path, text: str, words: tuple[str, ...]):
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Settings.load(path, env={})
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    "env,words",
    [
        ({"ANYMODA_DEVICE": "tpu"}, ("device", "'tpu'")),
        ({"ANYMODA_MEMORY_BUDGET": "2 gigs"}, ("memory_budget", "'2 gigs'")),
        ({"ANYMODA_MEMORY_BUDGET": "0"}, ("memory_budget", "positive")),
        ({"ANYMODA_LIMIT_MAX_IMAGE_PIXELS": "-100"}, ("limits.max_image_pixels", "positive")),
        ({"ANYMODA_LIMIT_MAX_IMAGE_PIXELS": "many"}, ("limits.max_image_pixels", "'many'")),
        ({"ANYMODA_LIMIT_MAX_IMAGE_PIXELS": "nan"}, ("limits.max_image_pixels",)),
        ({"ANYMODA_LIMIT_MAX_PIXELS": "5"}, ("[limits]",)),
        ({"ANYMODA_OFFLINE": "sometimes"}, ("offline",)),
        ({"ANYMODA_TORCH_THREADS": "-2"}, ("torch_threads",)),
    ],
)
def test_bad_environment_values_are_clear_errors(tmp_path: Path, env: dict[str, str], words: tuple[str, ...]):
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={"ANYMODA_HOME": str(tmp_path), **env})
    for word in words:
        assert word in str(caught.value), f"{word!r} not in {caught.value}"


def test_a_bad_environment_value_is_blamed_on_the_environment_not_on_a_missing_file(tmp_path: Path):
    """'/home/me/.anymoda/config.toml: limits.max_request_tokens must be a number' sent people to a file that did
    not exist: the value came from ANYMODA_LIMIT_MAX_REQUEST_TOKENS."""
    env = {"ANYMODA_HOME": str(tmp_path), "ANYMODA_LIMIT_MAX_REQUEST_TOKENS": "abc", "ANYMODA_OFFLINE": "1"}
    with pytest.raises(ConfigError) as caught:
        Settings.load(env=env)
    message = str(caught.value)
    assert message.startswith("the environment (ANYMODA_LIMIT_MAX_REQUEST_TOKENS, ANYMODA_OFFLINE): "), message
    assert "config.toml" not in message
    (tmp_path / "config.toml").write_text("[limits]\nmax_bytes = '1GiB'\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(env=env)
    assert str(caught.value).startswith(f"{tmp_path / 'config.toml'} or the environment (ANYMODA_LIMIT_MAX_REQUEST"), caught


def test_environment_limit_over_a_malformed_file_table_is_a_clear_error(tmp_path: Path):
    path = config_file(tmp_path, "limits = 5\n")
    with pytest.raises(ConfigError, match=r"\[limits\]"):
        Settings.load(path, env={"ANYMODA_LIMIT_MAX_BYTES": "1GiB"})
    path = config_file(tmp_path, 'models = "whisper"\n')
    with pytest.raises(ConfigError, match=r"\[models\]"):
        Settings.load(path, env={"ANYMODA_MODEL_OCR": "x"})


@pytest.mark.parametrize(
    "text", ['device = "cpu', "device = cpu\n", "[models\n", 'device = "cpu"\ndevice = "cuda"\n', "\xff\xfe".encode("latin-1")],
    ids=["unterminated", "bare-word", "bad-table", "duplicate", "not-utf8"],
)
def test_bad_toml_is_a_clear_error(tmp_path: Path, text):
    path = tmp_path / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        Settings.load(path, env={})
    assert str(path) in str(caught.value)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml.*does not exist"):
        Settings.load(missing, env={})
    with pytest.raises(ConfigError, match=r"nope\.toml.*does not exist"):
        Settings.load(env={"ANYMODA_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path, env={})  # a folder is not a config file


def test_from_dict_checks_like_the_file():
    settings = Settings.from_dict({"device": " CPU ", "memory_budget": 1024, "offline": "1", "limits": {"max_bytes": "1MiB"}})
    assert settings.device == "cpu" and settings.memory_budget == 1024 and settings.offline is True
    assert settings.limits.max_bytes == 2**20
    with pytest.raises(ConfigError, match=r"here: unknown setting\(s\) colour"):
        Settings.from_dict({"colour": "blue"}, source="here")
