"""``anymoda keys create|list|revoke`` and ``anymoda serve`` without the extra, through ``orchestrator.cli.main``."""

from __future__ import annotations

import json
import re

from orchestrator.cli import main
from orchestrator.config import Settings, current_settings, use_settings


def run(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keys_create_prints_the_key_once_and_list_and_revoke_manage_it(tmp_path, capsys):
    before = current_settings()
    use_settings(Settings.from_dict({"home": str(tmp_path / "home"), "offline": True}))
    try:
        code, out, err = run(capsys, "keys", "create", "--tenant", "acme", "--rate", "30", "--max-upload", "1MiB")
        assert code == 0 and re.fullmatch(r"amk_[A-Za-z0-9_-]{43}\n", out) and "shown once" in err
        secret = out.strip()
        code, out, _ = run(capsys, "keys", "list", "--json")
        [key] = json.loads(out)
        assert key["tenant"] == "acme" and key["active"] and key["requests_per_minute"] == 30
        assert key["max_upload_bytes"] == 1024 * 1024 and secret not in out
        code, out, _ = run(capsys, "keys", "list")
        assert key["id"] in out and "active" in out and secret not in out

        from orchestrator.serving.auth import KeyStore

        assert KeyStore(tmp_path / "home").authenticate(secret).tenant == "acme"
        code, out, _ = run(capsys, "keys", "revoke", key["id"])
        assert code == 0 and "revoked" in out
        assert KeyStore(tmp_path / "home").authenticate(secret) is None
        assert json.loads(run(capsys, "keys", "list", "--json")[1])[0]["active"] is False

        assert run(capsys, "keys", "create", "--tenant", "Bad:Name")[0] == 2
        assert run(capsys, "keys", "revoke", "key_nothex")[0] == 2
        assert run(capsys, "keys", "revoke", "key_000000000000")[0] == 2
    finally:
        use_settings(before)


def test_serve_without_the_extra_names_it_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr("orchestrator.serving.cli.missing_serve_modules", lambda modules=(): ["fastapi", "uvicorn"])
    code, out, err = run(capsys, "serve")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "pip install 'anymoda[serve]'" in err and "fastapi" in err
    code, _, err = run(capsys, "mcp")
    assert code == 2 and "anymoda[serve]" in err


def test_serve_refuses_worker_and_limit_counts_out_of_range_in_one_line(tmp_path, capsys):
    before = current_settings()
    use_settings(Settings.from_dict({"home": str(tmp_path / "home"), "offline": True}))
    try:  # each is refused before a server starts
        for option, value in (("--workers", "99999999999999999999"), ("--workers", "0"), ("--rate", "-5"),
                              ("--concurrent-runs", "10000001")):
            code, out, err = run(capsys, "serve", "--port", "8799", option, value)
            assert code == 2 and err.count("\n") == 1 and option in err and "must be from 1 to" in err, (option, err)
    finally:
        use_settings(before)


def test_a_part_the_server_lacks_is_a_501_naming_the_extra():
    # The request was fine; the server was installed without the plot extra (or the weights): not a 4xx.
    import types

    from fastapi.testclient import TestClient

    from orchestrator.errors import MissingExtraError
    from orchestrator.serving.app import create_app
    from orchestrator.serving.limits import ServeLimits
    from orchestrator.serving.state import Metrics

    class Lacking(types.SimpleNamespace):
        def __getattr__(self, name):  # the parts this route never reaches
            return None

    app = create_app(Lacking(metrics=Metrics(), limits=ServeLimits()))

    @app.get("/lacking")
    def lacking():
        raise MissingExtraError("plotting needs matplotlib: pip install 'anymoda[plot]'")

    answer = TestClient(app).get("/lacking")
    assert answer.status_code == 501 and "anymoda[plot]" in answer.json()["error"]["message"]
