"""The tool contract: what every expert adapter declares and the two methods it implements.

A tool is a small class::

    class SpeechRecognition(Tool):
        name = "speech-recognition"
        task = "automatic-speech-recognition"          # the Hugging Face task tag
        description = "Transcribe speech ..."
        inputs = {"audio": Input(ArtifactKind.AUDIO, "the recording")}
        outputs = {"text": Output(ArtifactKind.TEXT, "the transcript")}
        params = {"beam_size": Param(int, 5, "beam width", minimum=1, maximum=10)}
        default_model = "Systran/faster-whisper-tiny.en"
        requires = ("faster_whisper",)

        def load(self, source, device): ...            # weights folder -> model object
        def run(self, model, inputs, params): ...      # values in -> values out

Everything else (finding weights, sharing loaded models through the :class:`ModelPool`, checking
params against their bounds, turning artifacts into values and back) is done here and in
:mod:`orchestrator.tooling.invoke`, so adapters stay short and alike.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import Settings, current_settings
from ..errors import InvalidInputError, ModelNotAvailableError, ToolUnavailableError
from ..extras import extra_of, install_command, installed
from ..models.pool import ModelPool, default_pool
from ..models.resolve import (
    HubLocation,
    ModelSource,
    PackagedLocator,
    directory_size,
    pick_device,
    resolve_model,
)
from ..storage.artifacts import ArtifactKind
from ..storage.media import AudioClip, Detections, Masks, TimeSeries

TOOL_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Input:
    kind: ArtifactKind
    description: str
    required: bool = True


@dataclass(frozen=True)
class Output:
    kind: ArtifactKind
    description: str


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


@dataclass(frozen=True)
class Param:
    """A tunable setting with a default and bounds; values from outside are checked against it."""

    type: type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type not in _JSON_TYPES:
            raise TypeError(f"param type must be one of int, float, str, bool; got {self.type!r}")

    def check(self, owner: str, name: str, value: Any) -> Any:
        where = f"{owner}: param {name!r}"
        if value is None:
            if self.nullable:
                return None
            raise InvalidInputError(f"{where} must not be empty")
        if self.type is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.strip().lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise InvalidInputError(f"{where} must be true or false, got {value!r}")
        elif self.type in (int, float):
            if isinstance(value, bool):
                raise InvalidInputError(f"{where} must be a number, got {value!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InvalidInputError(f"{where} must be a number, got {value!r}") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise InvalidInputError(f"{where} must be a finite number, got {value!r}")
            if self.type is int:
                if number != int(number):
                    raise InvalidInputError(f"{where} must be a whole number, got {value!r}")
                number = int(number)
            if self.minimum is not None and number < self.minimum:
                raise InvalidInputError(f"{where} must be at least {self.minimum}, got {value!r}")
            if self.maximum is not None and number > self.maximum:
                raise InvalidInputError(f"{where} must be at most {self.maximum}, got {value!r}")
            value = number
        else:
            if not isinstance(value, str):
                raise InvalidInputError(f"{where} must be text, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InvalidInputError(f"{where} must be one of {', '.join(map(repr, self.choices))}; got {value!r}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type], "description": self.description, "default": self.default}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
        return schema


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str
    source: ModelSource | None = None
    summary: str = ""  # a few words for tables: "packaged", "hub download on first use", "weights not here", ...

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class OutputValue:
    """A tool output with extra metadata to index beside it (e.g. the detected language)."""

    value: Any
    metadata: dict[str, Any]


# What a tool receives for each input kind, and accepts back for each output kind.
VALUE_TYPES: dict[ArtifactKind, tuple[type, ...]] = {
    ArtifactKind.TEXT: (str,),
    ArtifactKind.AUDIO: (AudioClip,),
    ArtifactKind.TIME_SERIES: (TimeSeries,),
    ArtifactKind.DETECTIONS: (Detections,),
    ArtifactKind.MASKS: (Masks,),
    ArtifactKind.VIDEO: (bytes,),
    ArtifactKind.JSON: (dict, list, str, int, float, bool),
}


def check_value(kind: ArtifactKind, value: Any, what: str) -> None:
    if kind is ArtifactKind.IMAGE:
        from PIL import Image

        ok = isinstance(value, Image.Image)
    else:
        ok = isinstance(value, VALUE_TYPES[kind])
    if not ok:
        raise InvalidInputError(f"{what} must be {kind.value}, got {type(value).__name__}")


class Tool:
    name: ClassVar[str]
    task: ClassVar[str]
    description: ClassVar[str]
    inputs: ClassVar[dict[str, Input]]
    outputs: ClassVar[dict[str, Output]]
    params: ClassVar[dict[str, Param]] = {}
    default_model: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # importable module names of the runtime
    install_hint: ClassVar[str] = "pip install 'anymoda[offline]'"
    family: ClassVar[str | None] = None  # tools of one family with one model share a pool entry
    thread_safe: ClassVar[bool] = True
    uses_torch_device: ClassVar[bool] = False  # False: the runtime picks its own device (ONNX, CTranslate2 on CPU)
    # A packaged model id used when the default model is not here and the hub may not be asked
    # (offline) or cannot be reached; never replaces a model the caller or the config chose.
    offline_fallback: ClassVar[str | None] = None
    # A few requests in users' words that ask for this tool ("list the items on my receipt"): the tool
    # selector learns a plugin from them (and its description) without retraining its head.
    phrasings: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: str | None = None,
        *,
        settings: Settings | None = None,
        pool: ModelPool | None = None,
        device: str | None = None,
    ):
        self.settings = settings or current_settings()
        self.model_id = model or self.settings.model_for(self.name, self.default_model)
        self._may_fall_back = model is None and self.name not in self.settings.models and self.offline_fallback is not None
        self._pool = pool
        self._device_preference = device or self.settings.device
        self._source: ModelSource | None = None
        # Set by whoever runs the tool (CLI progress bar, executor event stream): (done, total, message).
        self.progress_callback: Callable[[float, float | None, str], None] | None = None

    # -------------------------------------------------------------- for subclasses

    def packaged_weights(self) -> dict[str, PackagedLocator]:
        """Model ids whose weights ship in a Python package, each with a function finding them."""
        return {}

    def hub_location(self, model_id: str) -> HubLocation | None:
        """Where the hub keeps ``model_id``; None if the hub does not have it."""
        return HubLocation(model_id)

    def load(self, source: ModelSource, device: str) -> Any:
        raise NotImplementedError

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        """Refuse bad input before the model loads (a blank prompt should not cost a multi-GB load).

        Called with the decoded input values and checked params; raise InvalidInputError. Checks
        that need the loaded model stay in ``run``.
        """

    def report_progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Long-running tools call this; it reaches the progress bar or event stream, if any."""
        if self.progress_callback is not None:
            self.progress_callback(done, total, message)

    # -------------------------------------------------------------- public

    @property
    def pool(self) -> ModelPool:
        return self._pool or default_pool()

    @property
    def device(self) -> str:
        return pick_device(self._device_preference) if self.uses_torch_device else "cpu"

    def missing_runtime(self) -> list[str]:
        return [module for module in self.requires if not installed(module)]

    def runtime_install_hint(self) -> str:
        """The command that installs what :meth:`missing_runtime` lists: the extra that ships an optional package
        (``pip install 'anymoda[plot]'`` for matplotlib), else the tool's ``install_hint``."""
        commands = [install_command(extra) if (extra := extra_of(module)) else self.install_hint
                    for module in self.missing_runtime()]
        return " && ".join(dict.fromkeys(commands)) or self.install_hint

    def resolve(self, *, download: bool = True) -> ModelSource:
        missing = self.missing_runtime()
        if missing:
            raise ToolUnavailableError(f"tool {self.name!r} needs the Python package(s) {', '.join(missing)}; "
                                       f"install them with {self.runtime_install_hint()}")
        if self._source is not None:
            return self._source
        try:
            source = self._resolve(download)
        except ModelNotAvailableError as exc:
            # Offline by setting, or in fact (the hub could not be reached): the packaged model serves.
            if not (self._may_fall_back and (self.settings.offline or getattr(exc, "hub_unreachable", False))):
                raise
            self.model_id = self.offline_fallback
            self._may_fall_back = False
            source = self._resolve(download)
        if download or (source.origin != "hub" and source.prepared):  # a peek is no answer for the next use
            self._source = source
        return source

    def _resolve(self, download: bool) -> ModelSource:
        return resolve_model(
            self.model_id,
            tool=self.name,
            packaged=self.packaged_weights(),
            hub=self.hub_location(self.model_id),
            offline=self.settings.offline,
            download=download,
            install_hint=self.install_hint,
        )

    def available(self) -> Availability:
        """Can this tool run here, and if not, why (nothing is downloaded, loaded, joined or converted)."""
        try:
            source = self.resolve(download=False)
        except ModelNotAvailableError as exc:
            return Availability(False, str(exc), summary="weights not here (offline)")
        except ToolUnavailableError as exc:
            missing = self.missing_runtime()
            return Availability(False, str(exc), summary=f"needs {', '.join(missing)}" if missing else "unavailable")
        if source.origin == "hub":
            return Availability(True, f"{self.model_id} will be downloaded from the Hugging Face hub on first use", source,
                                summary="hub download on first use")
        if not source.prepared:
            where = "into" if source.first_use == "prepared" else "at"
            return Availability(True, f"{self.model_id} ships packaged and is {source.first_use} once, on first use "
                                      f"({where} {source.path})", source, summary=f"packaged, {source.first_use} on first use")
        return Availability(True, f"{source.origin}: {source.path}", source, summary=source.origin)

    @contextmanager
    def loaded_model(self) -> Iterator[Any]:
        """The loaded model, from the pool (loaded on first use, shared across tools of one family)."""
        source = self.resolve()
        device = self.device
        key = (self.family or self.name, str(source.path), device)

        def size_hint() -> int:  # walking the weights folder is only worth it when a load is due
            return directory_size(source.path) if source.path.exists() else 0

        with self.pool.use(key, lambda: self.load(source, device), size_hint=size_hint, exclusive=not self.thread_safe) as model:
            _apply_torch_threads(self.settings)  # after the load: that is when torch gets imported
            yield model

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.params)
        if unknown:
            known = ", ".join(self.params) or "none"
            raise InvalidInputError(f"tool {self.name!r} has no param(s) {', '.join(sorted(unknown))}; its params: {known}")
        owner = f"tool {self.name!r}"
        return {name: spec.check(owner, name, params.get(name, spec.default)) for name, spec in self.params.items()}

    def __call__(self, **arguments: Any) -> dict[str, Any]:
        """Run on in-memory values (str, PIL image, AudioClip, ...); returns output values by name.

        For artifacts, lineage and storage use :func:`orchestrator.tooling.invoke.run_tool` instead.
        """
        inputs = {k: v for k, v in arguments.items() if k in self.inputs}
        params = self.check_params({k: v for k, v in arguments.items() if k not in self.inputs})
        for name, spec in self.inputs.items():
            if name not in inputs:
                if spec.required:
                    raise InvalidInputError(f"tool {self.name!r} needs the input {name!r} ({spec.kind.value})")
                continue
            check_value(spec.kind, inputs[name], f"tool {self.name!r}: input {name!r}")
        self.validate(inputs, params)
        with self.loaded_model() as model:
            produced = self.run(model, inputs, params)
        return {name: value.value if isinstance(value, OutputValue) else value for name, value in produced.items()}

    @classmethod
    def card(cls) -> dict[str, Any]:
        """A JSON-able description: what planners are shown and what ``anymoda tools --json`` prints."""
        properties: dict[str, Any] = {}
        for name, spec in cls.inputs.items():
            properties[name] = input_schema(spec)
        for name, spec in cls.params.items():
            properties[name] = spec.json_schema()
        return {
            "name": cls.name,
            "task": cls.task,
            "description": cls.description,
            "inputs": {n: {"kind": s.kind.value, "description": s.description, "required": s.required}
                       for n, s in cls.inputs.items()},
            "outputs": {n: {"kind": s.kind.value, "description": s.description} for n, s in cls.outputs.items()},
            "params": {n: s.json_schema() for n, s in cls.params.items()},
            "default_model": cls.default_model,
            "arguments_schema": {
                "type": "object",
                "properties": properties,
                "required": [n for n, s in cls.inputs.items() if s.required],
                "additionalProperties": False,
            },
        }


class WeightlessTool(Tool):
    """A tool computed by code alone: its "model" is the method named by ``default_model``.

    Nothing is downloaded; the method's "weights" are the tool's own module, so it resolves, pools
    and reports like any other tool. Subclasses implement :meth:`build_method` instead of ``load``.
    """

    def packaged_weights(self) -> dict[str, PackagedLocator]:
        module_file = Path(sys.modules[type(self).__module__].__file__)
        return {self.default_model: lambda: module_file}

    def hub_location(self, model_id: str) -> HubLocation | None:
        return None

    def load(self, source: ModelSource, device: str) -> Any:
        if source.model_id != self.default_model:
            raise InvalidInputError(f"tool {self.name!r} has one method, {self.default_model!r}; got model {source.model_id!r}")
        return self.build_method()

    def build_method(self) -> Any:
        raise NotImplementedError


def _apply_torch_threads(settings: Settings) -> None:
    """Honour the torch_threads setting once torch is in use (importing torch just for this would cost seconds)."""
    torch = sys.modules.get("torch")
    if settings.torch_threads and torch is not None and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def input_schema(spec: Input) -> dict[str, Any]:
    """JSON Schema of an input argument: an artifact id of the right kind, or for text/json a literal."""
    by_id = {"type": "string", "pattern": f"^{spec.kind.value}-[0-9a-f]{{16}}$"}
    if spec.kind is ArtifactKind.TEXT:
        schema: dict[str, Any] = {"type": "string"}
    elif spec.kind is ArtifactKind.JSON:
        schema = {}
    else:
        schema = by_id
    return {**schema, "description": spec.description, "x-anymoda-kind": spec.kind.value}


def packaged_file(module: str, *relative: str) -> PackagedLocator:
    """A locator for weights stored inside an installed package's folder (None if not installed)."""

    def locate() -> Path | None:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations)), *relative)
        return path if path.exists() else None

    return locate
