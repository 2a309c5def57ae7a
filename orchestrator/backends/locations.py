"""Parsing and checking where shared state lives: ``store`` (a folder or ``s3://bucket/prefix``),
``database`` (empty for SQLite under the home, or a ``postgresql://`` URL) and the ``[runner]`` table.

Every value comes from a config file or the environment, so each is bounded and checked here and a
bad one is a one-line :class:`~orchestrator.errors.ConfigError` naming the key."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

MAX_URL_LENGTH = 2048
# S3's bucket rules (3-63 characters, lowercase letters, digits, dots and hyphens, a letter or digit at each end).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{0,512}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:.]+\]$")
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
RUNNER_KINDS = ("local", "ray")
_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


def _hidden_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # '' or ends with '/'

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_url(value: str, what: str = "store") -> S3Location:
    """``s3://bucket`` or ``s3://bucket/some/prefix`` (no query, no credentials: those come from the environment)."""
    if len(value) > MAX_URL_LENGTH:
        raise ConfigError(f"{what} is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    if parts.scheme != "s3" or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"{what} must be s3://BUCKET/PREFIX without credentials, query or fragment, got {value!r}")
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ConfigError(f"{what}: {parts.netloc!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    prefix = parts.path.strip("/")
    if not _PREFIX.fullmatch(prefix) or any(piece in ("", ".", "..") for piece in prefix.split("/") if prefix):
        raise ConfigError(f"{what}: the prefix {prefix!r} may hold letters, digits and !_.*'()- between single '/'")
    return S3Location(parts.netloc, prefix + "/" if prefix else "")


def check_database_url(value: str, what: str = "database") -> str:
    """A ``postgresql://[user[:password]@]host[:port]/dbname[?sslmode=...]`` URL; '' means SQLite under the home."""
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_URL_LENGTH:
        raise ConfigError(f"{what} is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{what} must be a postgresql:// URL (or empty for SQLite under the home), "
                          f"got {_hidden_password(value)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{what}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or not _HOST.fullmatch(parts.hostname) or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"{what} must name a host (and optionally a port from 1 to 65535): {_hidden_password(value)!r}")
    name = parts.path.lstrip("/")
    if not _DATABASE_NAME.fullmatch(name):
        raise ConfigError(f"{what} must end in /DATABASE (1-63 letters, digits, '_', '.', '-'): {_hidden_password(value)!r}")
    return value


def shown_database(url: str) -> str:
    return _hidden_password(url)


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(f"{what} must be between {low:g} and {high:g}, got {value!r}")
    return number


@dataclass(frozen=True)
class ExpertResources:
    """What one replica of an expert's Ray actor reserves on its node (Ray's scheduling units)."""

    num_cpus: float = 0.0   # weightless and I/O-bound experts reserve nothing, so any node takes them
    num_gpus: float = 0.0   # a GPU expert's replicas go only to nodes with a free GPU
    memory: int = 0         # bytes; a large model's replicas go only to nodes with that much memory free

    def describe(self) -> str:
        memory = f", memory={self.memory / 2**20:g}MiB" if self.memory else ""
        return f"num_cpus={self.num_cpus:g}, num_gpus={self.num_gpus:g}{memory}"

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        return options


@dataclass(frozen=True)
class RunnerSettings:
    """``[runner]``: where tasks run. ``kind = "local"`` (a thread pool, the default) or ``"ray"``."""

    kind: str = "local"
    address: str = "auto"           # ray: "auto" (the cluster this host belongs to), "HOST:PORT" or "ray://HOST:PORT"
    max_workers: int = 8            # local: tasks at once
    replicas_per_node: int = 1      # ray: actors per expert on each node that can hold one
    slots: int = 4                  # ray: tasks one actor runs at once (more wait in its queue)
    namespace: str = "anymoda"      # ray: the namespace the expert actors are named in
    shared_experts: bool = False    # ray: experts outlive their front end and serve every front end (detached actors)
    resources: dict[str, ExpertResources] = field(default_factory=dict)  # tool name -> what its replicas reserve

    @classmethod
    def parse(cls, value: Any, source: str) -> RunnerSettings:
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [runner] must be a table")
        known = {"kind", "address", "max_workers", "replicas_per_node", "slots", "namespace", "resources",
                 "shared_experts"}
        if set(value) - known:
            raise ConfigError(f"{source}: [runner] unknown key(s) {', '.join(sorted(set(value) - known))}; "
                              f"known: {', '.join(sorted(known))}")
        kind = str(value.get("kind", "local")).strip().lower()
        if kind not in RUNNER_KINDS:
            raise ConfigError(f"{source}: runner.kind must be one of {', '.join(RUNNER_KINDS)}, got {value.get('kind')!r}")
        address = str(value.get("address", "auto")).strip()
        if address != "auto" and not re.fullmatch(r"(ray://)?[A-Za-z0-9.-]{1,253}:\d{1,5}", address):
            raise ConfigError(f"{source}: runner.address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
        if address != "auto" and not 0 < int(address.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(f"{source}: runner.address port must be from 1 to 65535, got {address!r}")
        namespace = str(value.get("namespace", "anymoda"))
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", namespace):
            raise ConfigError(f"{source}: runner.namespace must be 1-64 letters, digits, '_' or '-', got {namespace!r}")
        counts = {key: int(_number(value.get(key, default), f"{source}: runner.{key}", 1, high))
                  for key, default, high in (("max_workers", 8, 256), ("replicas_per_node", 1, 64), ("slots", 4, 256))}
        for key in counts:
            raw = value.get(key)
            if raw is not None and float(raw) != int(float(raw)):
                raise ConfigError(f"{source}: runner.{key} must be a whole number, got {raw!r}")
        resources_table = value.get("resources", {})
        if not isinstance(resources_table, dict):
            raise ConfigError(f"{source}: [runner.resources] must map tool names to tables")
        resources = {}
        for tool, needs in resources_table.items():
            if not isinstance(needs, dict) or set(needs) - set(_RESOURCE_KEYS):
                raise ConfigError(f"{source}: [runner.resources.{tool}] keys must be among {', '.join(_RESOURCE_KEYS)}")
            from ..config import parse_size

            resources[str(tool)] = ExpertResources(
                _number(needs.get("num_cpus", 0), f"{source}: runner.resources.{tool}.num_cpus", 0, 1024),
                _number(needs.get("num_gpus", 0), f"{source}: runner.resources.{tool}.num_gpus", 0, 64),
                parse_size(needs.get("memory", 0), f"{source}: runner.resources.{tool}.memory"))
        shared = value.get("shared_experts", False)
        if not isinstance(shared, bool):
            raise ConfigError(f"{source}: runner.shared_experts must be true or false, got {shared!r}")
        return cls(kind=kind, address=address, namespace=namespace, resources=resources, shared_experts=shared, **counts)
