"""The state a run keeps, opened from the settings: the artifact store, the run journal and the LangGraph checkpoints,
on the embedded back ends (a folder and SQLite files in the home) or the shared ones (S3 and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..storage.store import ArtifactStore
from .journal import RunJournal


class ConfiguredState:
    """The back ends the settings name: ``store`` (folder or s3://) and ``database`` ('' or postgresql://)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def blobs(self) -> Any:
        if self.settings.store.startswith("s3://"):
            from ..backends.s3_blobs import S3BlobStore

            return S3BlobStore(self.settings.store, self.settings.cache_dir / "blobs")
        from ..backends.sqlite import LocalBlobStore

        return LocalBlobStore(self.settings.store_dir)

    def index_database(self) -> Any:
        if self.settings.database:
            from ..backends.postgres import PostgresDatabase

            return PostgresDatabase(self.settings.database)
        from ..backends.sqlite import SqliteDatabase

        # With blobs in object storage the SQLite index still lives in the local store folder.
        return SqliteDatabase(self.settings.store_dir.expanduser().resolve() / "index.sqlite")

    def journal_database(self) -> Any:
        if self.settings.database:
            from ..backends.postgres import PostgresDatabase

            return PostgresDatabase(self.settings.database)
        from ..backends.sqlite import SqliteDatabase

        return SqliteDatabase(self.settings.home / "runs.sqlite")

    def checkpointer(self) -> Any:
        if self.settings.database:
            from ..backends.postgres import postgres_checkpointer

            return postgres_checkpointer(self.settings.database)
        from ..backends.sqlite import SqliteState

        return SqliteState(self.settings.home).checkpointer()


def open_store(settings: Settings) -> ArtifactStore:
    if not settings.store.startswith("s3://") and not settings.database:
        return ArtifactStore(settings.store_dir, settings.limits)  # the embedded default, exactly as before
    state = ConfiguredState(settings)
    return ArtifactStore(limits=settings.limits, blobs=state.blobs(), database=state.index_database())


def open_journal(settings: Settings) -> RunJournal:
    if not settings.database:
        return RunJournal(settings.home / "runs.sqlite")
    return RunJournal(database=ConfiguredState(settings).journal_database())


def open_checkpointer(settings: Settings) -> Any:
    return ConfiguredState(settings).checkpointer()
