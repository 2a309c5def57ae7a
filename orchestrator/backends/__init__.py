"""Storage back ends: where the artifact store, run journal and checkpoints keep their state.

* embedded (default): blobs in ``<home>/artifacts``, SQLite files in the home (:mod:`.sqlite`);
* shared: ``store = "s3://bucket/prefix"`` (:mod:`.s3_blobs`) and ``database = "postgresql://..."``
  (:mod:`.postgres`), so that every front end and Ray worker with the same config sees the same runs
  and artifacts. Those need the ``ray`` extra.

The interface they implement is :mod:`.protocols`; :mod:`orchestrator.execution.state` opens the ones the
settings name.
"""

from __future__ import annotations

from ..errors import ConfigError

EXTRA_HINT = 'install the "ray" extra: pip install -e ".[ray]"'


def missing_extra(what: str) -> ConfigError:
    return ConfigError(f"{what} needs the optional packages of the 'ray' extra; {EXTRA_HINT}")
