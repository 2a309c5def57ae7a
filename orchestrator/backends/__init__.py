"""Storage back ends: where the artifact store, run journal and checkpoints keep their state.

* embedded (default): blobs in ``<home>/artifacts``, SQLite files in the home (:mod:`.sqlite`);
* shared: ``store = "s3://bucket/prefix"`` (:mod:`.s3_blobs`) and ``database = "postgresql://..."``
  (:mod:`.postgres`), so that every front end and Ray worker with the same config sees the same runs
  and artifacts. Those need the ``ray`` extra.

The interface they implement is :mod:`.protocols`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings
    from ..journal import RunJournal
    from ..store import ArtifactStore

EXTRA_HINT = 'install the "ray" extra: pip install -e ".[ray]"'


def missing_extra(what: str) -> ConfigError:
    return ConfigError(f"{what} needs the optional packages of the 'ray' extra; {EXTRA_HINT}")


class ConfiguredState:
    """The back ends the settings name: ``store`` (folder or s3://) and ``database`` ('' or postgresql://)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def blobs(self) -> Any:
        if self.settings.store.startswith("s3://"):
            from .s3_blobs import S3BlobStore

            return S3BlobStore(self.settings.store, self.settings.cache_dir / "blobs")
        from .sqlite import LocalBlobStore

        return LocalBlobStore(self.settings.store_dir)

    def index_database(self) -> Any:
        if self.settings.database:
            from .postgres import PostgresDatabase

            return PostgresDatabase(self.settings.database)
        from .sqlite import SqliteDatabase

        # With blobs in object storage the SQLite index still lives in the local store folder.
        return SqliteDatabase(self.settings.store_dir.expanduser().resolve() / "index.sqlite")

    def journal_database(self) -> Any:
        if self.settings.database:
            from .postgres import PostgresDatabase

            return PostgresDatabase(self.settings.database)
        from .sqlite import SqliteDatabase

        return SqliteDatabase(self.settings.home / "runs.sqlite")

    def checkpointer(self) -> Any:
        if self.settings.database:
            from .postgres import postgres_checkpointer

            return postgres_checkpointer(self.settings.database)
        from .sqlite import SqliteState

        return SqliteState(self.settings.home).checkpointer()


def open_store(settings: Settings) -> ArtifactStore:
    from ..store import ArtifactStore

    if not settings.store.startswith("s3://") and not settings.database:
        return ArtifactStore(settings.store_dir, settings.limits)  # the embedded default, exactly as before
    state = ConfiguredState(settings)
    return ArtifactStore(limits=settings.limits, blobs=state.blobs(), database=state.index_database())


def open_journal(settings: Settings) -> RunJournal:
    from ..journal import RunJournal

    if not settings.database:
        return RunJournal(settings.home / "runs.sqlite")
    return RunJournal(database=ConfiguredState(settings).journal_database())


def open_checkpointer(settings: Settings) -> Any:
    return ConfiguredState(settings).checkpointer()
