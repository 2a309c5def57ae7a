"""Text to video with diffusers: ModelScope's text-to-video-ms-1.7b (TextToVideoSDPipeline) by default.

Any diffusers text-to-video pipeline whose call takes ``prompt`` and ``num_frames`` and returns
``frames`` loads by model id (model_index.json names its class). The frames are encoded to an MP4
(H.264, yuv420p, so browsers and phones play it) with PyAV, whose wheels bundle their own FFmpeg
libraries: no system ffmpeg is needed (the ``video`` extra: ``pip install 'anymoda[video]'``).
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import (
    InvalidInputError,
    ToolExecutionError,
    ToolUnavailableError,
)
from orchestrator.extras import import_extra
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param

from .diffusers_runtime import (
    LoadedPipeline,
    PromptedTool,
    call_defaults,
    check_prompt,
    check_side,
    diffusers_hub_location,
    dtype_argument,
    native_side,
    pick_seed,
    prepare_pipeline,
    run_pipeline,
    seed_param,
    seeded_generator,
)

MAX_FRAMES = 64
MAX_SIDE = 1024
# Frames x pixels per call: 64 frames at 512x512 (the model card shows 64 frames at 256x256).
MAX_FRAME_PIXELS = 64 * 512 * 512


def encode_mp4(frames: np.ndarray, fps: int) -> tuple[bytes, str]:
    """uint8 frames (n, height, width, 3) -> MP4 bytes and the codec used.

    H.264 first (what every player expects); MPEG-4 Part 2 where a PyAV build lacks libx264. PyAV is the
    ``video`` extra.
    """
    av = import_extra("av", "writing a video file")

    _, height, width, _ = frames.shape
    last_error: Exception | None = None
    with tempfile.TemporaryDirectory(prefix="anymoda-video-") as folder:
        path = Path(folder) / "clip.mp4"
        for codec in ("libx264", "mpeg4"):
            try:
                # faststart moves the index to the front so browsers play while downloading; the muxer
                # rewrites the file to do it, which needs a real file rather than a memory buffer.
                with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
                    stream = container.add_stream(codec, rate=fps)
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    # One encoder thread: threaded x264 often gave different bytes for the same frames from
                    # run to run here (one thread rarely still does, hence the frames' hash in the metadata).
                    stream.codec_context.thread_count = 1
                    if codec == "libx264":
                        stream.options = {"crf": "18", "preset": "medium"}  # visually lossless; clips are short
                    else:
                        stream.bit_rate = int(width * height * fps * 0.5)
                    for frame in frames:
                        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                            container.mux(packet)
                    for packet in stream.encode():  # flush the encoder's delayed frames
                        container.mux(packet)
            except (av.codec.codec.UnknownCodecError, av.error.FFmpegError, ValueError) as exc:
                last_error = exc
                continue
            return path.read_bytes(), "h264" if codec == "libx264" else codec
    raise ToolExecutionError(f"could not encode the video with PyAV ({type(last_error).__name__}: {last_error})")


def frames_to_uint8(frames: Any) -> np.ndarray:
    """The first video of a pipeline's ``frames`` output as uint8 (n, height, width, 3)."""
    if isinstance(frames, list):  # output_type="pil": a list of videos, each a list of images
        video = np.stack([np.asarray(image.convert("RGB")) for image in frames[0]])
    else:
        video = np.asarray(frames[0] if np.ndim(frames) == 5 else frames)
    if video.dtype != np.uint8:
        if not np.all(np.isfinite(video)):
            raise ToolExecutionError("the model produced NaN frames (try fp32, another seed or fewer frames)")
        video = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    return video


class TextToVideo(PromptedTool):
    name = "text-to-video"
    task = "text-to-video"
    description = (
        "Generate a short video clip (a few seconds, no sound) from a text description, e.g. 'a panda surfing a "
        "wave'. Returns an MP4. Needs only a prompt; length is num_frames / fps."
    )
    inputs = {
        "prompt": Input(ArtifactKind.TEXT, "what the clip should show"),
        "negative_prompt": Input(ArtifactKind.TEXT, "what the clip should not show", required=False),
    }
    outputs = {"video": Output(ArtifactKind.VIDEO, "the generated clip (MP4, H.264)")}
    params = {
        "num_frames": Param(int, 16, "number of frames (the default model was trained on 16)", minimum=1, maximum=MAX_FRAMES),
        "fps": Param(int, 8, "frames per second of the file", minimum=1, maximum=60),
        "steps": Param(int, None, "denoising steps (empty: 25 for ModelScope text-to-video with the multistep solver "
                       "of its model card, else the pipeline's default)", minimum=1, maximum=100, nullable=True),
        "guidance_scale": Param(float, None, "how strictly to follow the prompt (empty: the pipeline's default, 9)",
                                minimum=0.0, maximum=30.0, nullable=True),
        "width": Param(int, None, "frame width, a multiple of 8 (empty: the model's native size, 256 for the default)",
                       minimum=64, maximum=MAX_SIDE, nullable=True),
        "height": Param(int, None, "frame height, a multiple of 8 (empty: the model's native size)",
                        minimum=64, maximum=MAX_SIDE, nullable=True),
        "seed": seed_param(),
    }
    default_model = "damo-vilab/text-to-video-ms-1.7b"
    requires = ("torch", "diffusers", "transformers", "av")  # av: the MP4 (the `video` extra)
    uses_torch_device = True
    thread_safe = False

    def hub_location(self, model_id: str) -> HubLocation | None:
        return diffusers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> LoadedPipeline:
        from diffusers import (
            DiffusionPipeline,
            DPMSolverMultistepScheduler,
            TextToVideoSDPipeline,
        )

        pipe = DiffusionPipeline.from_pretrained(str(source.path), **dtype_argument(device))
        accepted = inspect.signature(pipe.__call__).parameters
        if "num_frames" not in accepted or "prompt" not in accepted or "image" in accepted:
            raise ToolUnavailableError(
                f"tool {self.name!r}: {source.model_id} is a {type(pipe).__name__}, not a text-to-video pipeline"
            )
        if isinstance(pipe, TextToVideoSDPipeline):
            # The ModelScope model card swaps in the multistep DPM solver, which is good at 25 steps.
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()  # decode frame by frame: all frames at once is the memory peak
        return prepare_pipeline(pipe, device)

    def run(self, model: LoadedPipeline, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from diffusers import TextToVideoSDPipeline

        prompt = check_prompt(self.name, "prompt", inputs["prompt"])
        negative = check_prompt(self.name, "negative_prompt", inputs.get("negative_prompt"), required=False)
        width, height = check_side(self.name, "width", params["width"]), check_side(self.name, "height", params["height"])
        pipe = model.pipe
        side = native_side(pipe, fallback=256)
        width, height = width or side, height or side
        frames_asked = params["num_frames"]
        if frames_asked * width * height > MAX_FRAME_PIXELS:
            raise InvalidInputError(
                f"tool {self.name!r}: params 'num_frames' x 'width' x 'height' = {frames_asked} x {width} x {height} is over "
                f"the limit of {MAX_FRAME_PIXELS:,} pixels per clip; use fewer frames or a smaller size"
            )
        defaults = call_defaults(pipe)
        steps = params["steps"] or (25 if isinstance(pipe, TextToVideoSDPipeline) else defaults.get("num_inference_steps", 50))
        guidance = params["guidance_scale"]
        if guidance is None:
            guidance = defaults.get("guidance_scale", 9.0)
        seed = pick_seed(params["seed"])
        result = run_pipeline(
            self, pipe, steps, prompt=prompt, negative_prompt=negative, num_frames=frames_asked, height=height,
            width=width, num_inference_steps=steps, guidance_scale=guidance, generator=seeded_generator(seed),
            output_type="np",
        )
        video = frames_to_uint8(result.frames)
        data, codec = encode_mp4(video, params["fps"])
        # The frames are what the seed determines; this hash shows it even when the encoder's bytes differ.
        frames_sha256 = hashlib.sha256(video.tobytes()).hexdigest()
        return {"video": OutputValue(data, {
            "seed": seed, "steps": steps, "guidance_scale": guidance, "frames": int(video.shape[0]),
            "fps": params["fps"], "duration_s": round(video.shape[0] / params["fps"], 3), "width": int(video.shape[2]),
            "height": int(video.shape[1]), "codec": codec, "frames_sha256": frames_sha256,
            "pipeline": type(pipe).__name__,
        })}
