"""Speech enhancement: reduce steady background noise in a recording by spectral gating (no weights).

The noise spectrum is estimated from the quietest frames of the recording itself (the pauses between
words), then every time-frequency cell is attenuated by how much of its power that noise explains:
a power-domain spectral subtraction gain, floored so nothing is cut to silence (deep cuts sound
"watery"), and smoothed over neighbouring cells against musical noise. This removes hiss, hum, fans
and traffic rumble well; it does not separate overlapping voices or remove sudden noises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import AudioClip
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, WeightlessTool

METHOD = "anymoda/spectral-gating"
MIN_SECONDS = 0.25
MAX_SECONDS = 3600.0


class _SpectralGate:
    """Stateless: the method has no weights, so one instance serves every call."""

    def enhance(self, samples: np.ndarray, sample_rate: int, *, strength: float, max_attenuation_db: float,
                noise_percentile: float) -> tuple[np.ndarray, dict[str, float]]:
        from scipy.ndimage import uniform_filter
        from scipy.signal import istft, stft

        n_fft = int(2 ** round(np.log2(0.032 * sample_rate)))  # ~32 ms windows resolve speech harmonics
        hop = n_fft // 4
        _, _, spectrum = stft(samples, fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop, boundary="even")
        power = np.abs(spectrum) ** 2
        loudness = power.mean(axis=0)
        quiet = loudness <= np.percentile(loudness, noise_percentile)
        if quiet.sum() >= 3:
            noise = power[:, quiet].mean(axis=1, keepdims=True)
        else:  # too short to find pauses: a low percentile per frequency still tracks steady noise
            noise = np.percentile(power, noise_percentile, axis=1, keepdims=True)
        floor = 10 ** (-max_attenuation_db / 10)
        gain = np.sqrt(np.maximum(1.0 - strength * noise / np.maximum(power, 1e-12), floor))
        gain = uniform_filter(gain, size=(3, 5), mode="nearest")  # 3 bins x 5 frames
        _, cleaned = istft(spectrum * gain, fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
        cleaned = cleaned[: samples.shape[0]]
        if cleaned.shape[0] < samples.shape[0]:
            cleaned = np.pad(cleaned, (0, samples.shape[0] - cleaned.shape[0]))
        speech = power[:, ~quiet].mean() if (~quiet).any() else power.mean()
        report = {
            "noise_frames": float(quiet.mean()),
            "estimated_snr_db": float(10 * np.log10(max(speech, 1e-12) / max(float(noise.mean()), 1e-12))),
            "mean_gain_db": float(20 * np.log10(max(float(gain.mean()), 1e-12))),
        }
        return np.clip(cleaned, -1.0, 1.0).astype(np.float32), report


class SpeechEnhancement(WeightlessTool):
    name = "speech-enhancement"
    task = "audio-to-audio"
    description = (
        "Remove steady background noise (hiss, hum, fans, traffic) from a speech recording so the voice is clearer; "
        "returns the cleaned audio at the same length and sample rate."
    )
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the noisy recording")}
    outputs = {"audio": Output(ArtifactKind.AUDIO, "the recording with the noise reduced")}
    params = {
        # Over-subtraction: noise power fluctuates around its mean, so removing the mean once leaves
        # half of its peaks; twice the estimate is the usual choice at low signal-to-noise ratios.
        "strength": Param(float, 2.0, "how many times the estimated noise power to remove (0 leaves the audio as it is)",
                          minimum=0.0, maximum=4.0),
        "max_attenuation_db": Param(float, 18.0, "the most any sound is turned down, in dB", minimum=0.0, maximum=60.0),
        "noise_percentile": Param(float, 10.0, "frames this quiet or quieter (percentile of loudness) are taken as "
                                               "noise", minimum=1.0, maximum=50.0),
    }
    default_model = METHOD

    def build_method(self) -> Any:
        return _SpectralGate()

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        clip = inputs.get("audio")
        if isinstance(clip, AudioClip) and not MIN_SECONDS <= clip.duration_s <= MAX_SECONDS:
            raise InvalidInputError(f"{self.name}: input 'audio' lasts {clip.duration_s:.2f} s; it must last between "
                                    f"{MIN_SECONDS} s and {MAX_SECONDS:.0f} s")

    def run(self, gate: _SpectralGate, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        clip: AudioClip = inputs["audio"]
        channels = clip.samples if clip.samples.ndim == 2 else clip.samples[:, None]
        cleaned, reports = [], []
        for index in range(channels.shape[1]):
            self.report_progress(index, channels.shape[1], "removing noise")
            samples, report = gate.enhance(channels[:, index].astype(np.float64), clip.sample_rate,
                                           strength=params["strength"], max_attenuation_db=params["max_attenuation_db"],
                                           noise_percentile=params["noise_percentile"])
            cleaned.append(samples)
            reports.append(report)
        out = np.stack(cleaned, axis=1) if clip.samples.ndim == 2 else cleaned[0]
        metadata = {key: round(float(np.mean([r[key] for r in reports])), 3) for key in reports[0]}
        return {"audio": OutputValue(AudioClip(out, clip.sample_rate), {**metadata, "method": METHOD})}
