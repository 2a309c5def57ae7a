"""speech-enhancement: spectral gating on synthetic speech-like audio with known clean reference."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import InvalidInputError, ToolRegistry
from orchestrator.tooling.invoke import run_tool
from orchestrator.storage.media import AudioClip
from tools.speech_enhancement import SpeechEnhancement

RATE = 16000


def voiced(seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic 'words' of 0.6 s with 0.4 s pauses, and the mask of the pauses."""
    t = np.arange(int(RATE * seconds)) / RATE
    words = (t % 1.0) < 0.6
    tone = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t) + 0.3 * np.sin(2 * np.pi * 540 * t)
    return 0.3 * words * tone * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), ~words


def with_noise(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, clean.shape)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) / 10 ** (snr_db / 20)
    return (clean + noise).astype(np.float32)


def snr(reference: np.ndarray, signal: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((signal - reference) ** 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_is_reduced_and_the_voice_kept(seed):
    clean, pauses = voiced()
    noisy = with_noise(clean, 5.0, seed)
    out = SpeechEnhancement()(audio=AudioClip(noisy, RATE))["audio"]
    assert out.sample_rate == RATE and out.samples.shape == noisy.shape
    assert snr(clean, out.samples) >= snr(clean, noisy) + 6.0  # measured +9.9 dB at the defaults
    attenuation = 10 * np.log10(np.mean(noisy[pauses] ** 2) / np.mean(out.samples[pauses] ** 2))
    assert attenuation >= 9.0  # the pauses, pure noise, are turned down (measured 12.3 dB)


def test_clean_audio_passes_almost_untouched_and_strength_zero_is_identity():
    clean, _ = voiced(2.0)
    tool = SpeechEnhancement()
    assert snr(clean, tool(audio=AudioClip(clean.astype(np.float32), RATE))["audio"].samples) > 25.0
    noisy = with_noise(clean, 10.0)
    same = tool(audio=AudioClip(noisy, RATE), strength=0.0)["audio"].samples
    assert np.allclose(same, noisy, atol=1e-4)


def test_stereo_keeps_its_channels_and_run_tool_stores_the_result(store):
    clean, _ = voiced(2.0)
    stereo = np.stack([with_noise(clean, 5.0, 3), with_noise(clean, 5.0, 4)], axis=1)
    audio = store.put_value("audio", AudioClip(stereo, RATE))
    tool = ToolRegistry.default().get("speech-enhancement")()
    run = run_tool(tool, {"audio": audio.id}, store=store)
    assert run.values["audio"].samples.shape == stereo.shape
    assert run.outputs["audio"].metadata["estimated_snr_db"] > 0
    assert run.outputs["audio"].parents == (audio.id,)


def test_too_short_audio_is_refused_before_running():
    with pytest.raises(InvalidInputError, match="lasts 0.10 s"):
        SpeechEnhancement()(audio=AudioClip(np.zeros(1600, dtype=np.float32), RATE))
