"""One workflow over a folder of files: a run per file, a few at a time, resumable, with a results table.

    report = run_batch(orchestrator, workflow, "photos/", "results/", jobs=2)

Each file becomes one workflow run (its own session). Outputs are saved under ``results/<file stem>/``.
What happened to every file is appended to ``results/batch-state.jsonl`` the moment it happens, so a
batch that was interrupted (Ctrl-C, a crash, ``kill -9``) continues where it stopped when run again:
files already done (same content, same workflow) are skipped, runs that were cut off are resumed from
the journal (their finished tasks are not run again), the rest start. A bad file (corrupt, of the wrong
kind) fails alone; the others go on. At the end ``results.csv`` and ``results.jsonl`` hold one row per
file: status, run id, seconds, outputs (saved paths; texts inline), error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AnymodaError, InvalidInputError, shown_path
from ..execution.journal import RunBusyError, new_run_id
from ..storage.artifacts import ArtifactKind
from ..storage.codecs import check_output_folder
from ..storage.store import extension_for
from .definition import Workflow, safe_filename

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

STATE_FILE = "batch-state.jsonl"
LOCK_FILE = ".batch.lock"  # a leading dot: no file's output folder can have this name (safe_filename)
FILE_KINDS = (ArtifactKind.IMAGE, ArtifactKind.AUDIO, ArtifactKind.VIDEO, ArtifactKind.TIME_SERIES)
INLINE_TEXT_CHARS = 500


@dataclass
class BatchRow:
    file: str
    sha256: str
    status: str  # done | failed | skipped (done in an earlier batch run)
    run: str | None = None
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)  # output name -> saved path(s) or inline text
    error: str | None = None


@dataclass
class BatchReport:
    rows: list[BatchRow]
    csv_path: Path
    jsonl_path: Path

    @property
    def failed(self) -> list[BatchRow]:
        return [r for r in self.rows if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in self.rows:
            found[row.status] = found.get(row.status, 0) + 1
        return found


def batch_input(workflow: Workflow, fixed: dict[str, Any], chosen: str | None) -> str:
    """Which input each file of the folder fills: the one named, or the only file input not given otherwise."""
    if chosen is not None:
        if chosen not in workflow.inputs:
            raise InvalidInputError(f"workflow {workflow.name!r} has no input {chosen!r}; its inputs: "
                                    f"{', '.join(workflow.inputs)}")
        return chosen
    open_inputs = [n for n, i in workflow.inputs.items() if n not in fixed and i.kind in FILE_KINDS]
    if len(open_inputs) != 1:
        raise InvalidInputError(f"workflow {workflow.name!r} has {len(open_inputs)} file inputs not given with --input "
                                f"({', '.join(open_inputs) or 'none'}); say which one the folder's files fill")
    return open_inputs[0]


def batch_files(folder: str | os.PathLike[str], pattern: str = "*") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"batch folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InvalidInputError(f"batch folder {str(folder)!r} has no files matching {pattern!r}")
    return files


class _State:
    """The append-only record of a batch: what started (with its run id) and how each file ended."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.started: dict[str, str] = {}  # key -> run id
        self.finished: dict[str, dict[str, Any]] = {}  # key -> row
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a crash: that file simply runs (or resumes) again
                if entry.get("event") == "started":
                    self.started[entry["key"]] = entry["run"]
                elif entry.get("event") == "finished":
                    self.finished[entry["key"]] = entry["row"]

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def run_batch(orchestrator: Any, workflow: Workflow, folder: str | os.PathLike[str], out: str | os.PathLike[str], *,
              fixed_inputs: dict[str, Any] | None = None, input_name: str | None = None, jobs: int = 2,
              pattern: str = "*", on_row: Callable[[BatchRow], None] | None = None) -> BatchReport:
    """Run ``workflow`` once per file of ``folder`` (see the module docstring); ``on_row`` hears each file end."""
    if not 1 <= jobs <= 64:
        raise InvalidInputError(f"jobs must be between 1 and 64, got {jobs}")
    fixed = dict(fixed_inputs or {})
    name = batch_input(workflow, fixed, input_name)
    files = batch_files(folder, pattern)
    out = check_output_folder(out, "batch output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # no permission, a full disk
        raise InvalidInputError(f"batch output folder {shown_path(str(out))} cannot be made ({exc.strerror or exc})") from None
    with _folder_lock(out):
        return _run_batch(orchestrator, workflow, files, out, fixed, name, jobs, on_row)


@contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """One batch at a time per output folder. Two into one folder ran the files the first had not reached twice,
    took the first's live runs for crashed ones (RunBusyError rows) and raced on the results table. The lock is
    the kernel's (flock), so a batch killed with -9 leaves nothing to clean up; where there is no flock
    (Windows), there is no lock."""
    if fcntl is None:
        yield
        return
    path = out / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"batch output folder {shown_path(str(out))}: cannot open {LOCK_FILE} "
                                f"({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = " ".join(handle.read(200).split()[:2]) or "?"
            pid, _, host = owner.partition(" ")
            raise RunBusyError(f"batch output folder {shown_path(str(out))} is being written by process {pid} on "
                               f"{host or '?'}; wait for that batch to finish, or give another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_batch(orchestrator: Any, workflow: Workflow, files: list[Path], out: Path, fixed: dict[str, Any], name: str,
               jobs: int, on_row: Callable[[BatchRow], None] | None) -> BatchReport:
    state = _State(out / STATE_FILE)
    fingerprint = workflow.fingerprint() + hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    stems = _unique_stems(files)

    def one(path: Path) -> BatchRow:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        key = f"{path.name}:{digest[:16]}:{fingerprint}"
        earlier = state.finished.get(key)
        if earlier is not None and earlier["status"] == "done" and _saved_outputs_exist(earlier):
            return BatchRow(**{**earlier, "status": "skipped"})
        started = time.perf_counter()
        try:
            run_id = state.started.get(key)
            if run_id is not None and _resumable(orchestrator, run_id):
                result = orchestrator.resume(run_id)
            else:
                run_id = new_run_id()
                state.write({"event": "started", "key": key, "run": run_id, "file": path.name})
                result = orchestrator.run_workflow(workflow, {**fixed, name: path}, run_id=run_id)
            saved = save_outputs(orchestrator.store, result, out / stems[path])
            error = result.error or ("; ".join(result.failures) if result.failures else None)
            row = BatchRow(path.name, digest, "failed" if error else "done", run_id, time.perf_counter() - started, saved,
                           error)
        except AnymodaError as exc:
            row = BatchRow(path.name, digest, "failed", state.started.get(key), time.perf_counter() - started, {}, str(exc))
        except Exception as exc:  # noqa: BLE001 - one file's surprise must not stop the batch
            row = BatchRow(path.name, digest, "failed", state.started.get(key), time.perf_counter() - started, {},
                           f"{type(exc).__name__}: {exc}")
        state.write({"event": "finished", "key": key, "row": asdict(row)})
        return row

    rows: dict[Path, BatchRow] = {}
    with ThreadPoolExecutor(jobs, thread_name_prefix="anymoda-batch") as pool:
        futures = {pool.submit(one, path): path for path in files}
        for future in as_completed(futures):
            row = future.result()
            rows[futures[future]] = row
            if on_row is not None:
                on_row(row)
    ordered = [rows[path] for path in files]
    return BatchReport(ordered, *_write_tables(ordered, workflow, out))


def save_outputs(store: Any, result: Any, folder: Path) -> dict[str, Any]:
    """A run's named outputs as files in ``folder`` (``<name><ext>``, ``<name>-<i><ext>`` for lists);
    texts are also returned inline (shortened) for the results table."""
    saved: dict[str, Any] = {}
    taken: set[str] = set()  # file names of this run, without regard to case: outputs 'x' (a list) and 'x-0' meet
    for name, value in result.outputs.items():
        if value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        paths, texts = [], []
        for index, artifact_id in enumerate(ids):
            artifact = store.get(artifact_id, session=result.session)
            # Output names are checked when a workflow file is read, but a Workflow can be built in code.
            base = safe_filename(f"{name}-{index}" if isinstance(value, list) else name, fallback="output")
            extension, stem, n = extension_for(artifact.mime), base, 2
            while f"{stem}{extension}".casefold() in taken:
                stem, n = f"{base}-{n}", n + 1
            taken.add(f"{stem}{extension}".casefold())
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where the folder is meant, no permission, a full disk
                raise InvalidInputError(f"cannot save the outputs in {shown_path(str(folder))} "
                                        f"({exc.strerror or exc})") from None
            paths.append(str(store.export(artifact_id, folder / f"{stem}{extension}", session=result.session)))
            if artifact.kind is ArtifactKind.TEXT:
                texts.append(str(store.load(artifact_id, session=result.session))[:INLINE_TEXT_CHARS])
        saved[name] = {"files": paths, **({"text": texts if isinstance(value, list) else texts[0]} if texts else {})}
    return saved


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: one that starts with = + - @, a tab or a carriage return (a
    batch file named ``=HYPERLINK(...).csv``, an OCR'd formula) would be run as a formula, so it gets a
    leading ``'``, as OWASP's CSV-injection advice says. The full-width forms (＝ ＋ － ＠), which some
    spreadsheets in East Asian locales read as their ASCII twins, and invisible format characters in front
    of one (a right-to-left override before ``=``) count too."""
    text = "" if value is None else str(value)
    lead = text.lstrip("".join(_INVISIBLE_LEADS))[:1]
    return "'" + text if lead in _FORMULA_LEADS or text[:1] in ("\t", "\r") else text


_FORMULA_LEADS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
_INVISIBLE_LEADS = ("\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d",
                    "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff", " ")


def _saved_outputs_exist(row: dict[str, Any]) -> bool:
    return all(Path(p).is_file() for value in row.get("outputs", {}).values() for p in value.get("files", []))


def _resumable(orchestrator: Any, run_id: str) -> bool:
    try:
        record = orchestrator.journal.get_run(run_id)
    except InvalidInputError:  # never recorded: the process died between the state line and the run's start
        return False
    return record.status in ("running", "cancelled", "planning")


# What the batch itself writes in its output folder, beside one folder per file: no file's folder may take
# these names ('results.jsonl.png' made a folder the table could not replace).
OWN_FILES = (STATE_FILE, "results.csv", "results.jsonl", "results.csv.part", "results.jsonl.part")


def _unique_stems(files: list[Path]) -> dict[Path, str]:
    """Each file's output folder: its name made safe, unique without regard to case (one folder on macOS
    and Windows), never one of :data:`OWN_FILES`."""
    stems: dict[Path, str] = {}
    used: set[str] = {name.casefold() for name in OWN_FILES}
    for path in files:
        base = safe_filename(path.stem, fallback="file")
        stem, n = base, 2
        while stem.casefold() in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem.casefold())
        stems[path] = stem
    return stems


def _write_tables(rows: list[BatchRow], workflow: Workflow, out: Path) -> tuple[Path, Path]:
    jsonl_path, csv_path = out / "results.jsonl", out / "results.csv"
    names = list(workflow.outputs)
    with open(jsonl_path.with_suffix(".jsonl.part"), "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
    jsonl_path.with_suffix(".jsonl.part").replace(jsonl_path)
    with open(csv_path.with_suffix(".csv.part"), "w", encoding="utf-8", newline="") as handle:
        # Every cell quoted, so that a separator inside one cannot start another in a spreadsheet set to
        # another separator; file names, texts and errors come from outside (csv_cell).
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow([csv_cell(c) for c in ["file", "status", "run", "seconds", *names, "error"]])
        for row in rows:
            cells = []
            for name in names:
                value = row.outputs.get(name) or {}
                text = value.get("text")
                cells.append(" | ".join(text) if isinstance(text, list) else text if text else
                             " ".join(value.get("files", [])))
            writer.writerow([csv_cell(c) for c in [row.file, row.status, row.run or "", f"{row.seconds:.2f}", *cells,
                                                   row.error or ""]])
    csv_path.with_suffix(".csv.part").replace(csv_path)
    return csv_path, jsonl_path
