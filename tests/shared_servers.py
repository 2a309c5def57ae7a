"""Real servers for the shared-state tests: PostgreSQL from the system's package and an S3-compatible
server (moto's server mode), each on a free loopback port, started once per test module.

PostgreSQL refuses to run as root, so as root the cluster belongs to a system user (``anymoda-pg``,
created if missing) and its commands run through ``runuser``. Without the ``ray`` extra these tests
are skipped (the extra is what they test); with it, a missing PostgreSQL is a failure, not a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_USER = "anymoda-pg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, seconds: float, process: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds:g} s")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    pytest.fail("PostgreSQL is not installed (no pg_ctl): apt-get install -y postgresql", pytrace=False)


def _as_pg_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True)
    return ["runuser", "-u", PG_USER, "--", *command]


def require_extra() -> None:
    pytest.importorskip("psycopg", reason="the 'ray' extra (psycopg, boto3, ray) is not installed")
    pytest.importorskip("boto3", reason="the 'ray' extra (psycopg, boto3, ray) is not installed")


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields the URL of its 'postgres' database (trust auth, loopback only)."""
    bin_dir = _pg_bin()
    data = Path(tempfile.mkdtemp(prefix="anymoda-pg-"))
    if os.geteuid() == 0:
        _as_pg_user(["true"])  # creates the user
        shutil.chown(data, PG_USER)
    data.chmod(0o700)
    port = free_port()
    log = data / "server.log"
    try:
        subprocess.run(_as_pg_user([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust",
                                    "--encoding=UTF8", "--no-instructions"]), check=True, capture_output=True)
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(_as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(log),
                                    "-w", "-t", "60", "start"]), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def new_database(admin_url: str) -> str:
    """A fresh, empty database on the server, so every test starts from first use."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3-compatible server on loopback; yields the environment a client needs (the usual AWS variables)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, 60, process, "the S3 server")
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "anymoda-test",
               "AWS_SECRET_ACCESS_KEY": "anymoda-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def new_bucket(environment: dict[str, str]) -> str:
    import boto3

    name = f"anymoda-{secrets.token_hex(4)}"
    client = boto3.session.Session(aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                                   region_name=environment["AWS_DEFAULT_REGION"]).client(
        "s3", endpoint_url=environment["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=name)
    return name
