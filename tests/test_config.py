"""Settings come from defaults, a TOML file and TELEHUB_* variables, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehub.config import ConfigError, Settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATA", "DATABASE_URL", "STORAGE_URL", "BROKER_URL", "CONFIG", "HTTP_PORT"):
        monkeypatch.delenv(f"TELEHUB_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings.load()
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'telehub-data' / 'telehub.sqlite3'}"
    assert s.resolved_storage_url == str(tmp_path / "telehub-data" / "objects")
    assert s.broker_is_local and s.run_embedded_worker
    assert (s.http_host, s.http_port, s.dicom_port, s.ae_title) == (
        "127.0.0.1",
        8080,
        11112,
        "TELEHUB",
    )


def test_file_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "telehub.toml"
    cfg.write_text('[telehub]\nhttp_port = 9000\ndicom_port = 104\nbroker_url = "redis://x/0"\n')
    monkeypatch.setenv("TELEHUB_HTTP_PORT", "9100")
    s = Settings.load(cfg)
    assert s.http_port == 9100  # the environment wins
    assert s.dicom_port == 104
    assert not s.broker_is_local and not s.run_embedded_worker
    env = s.as_environment()
    assert env["TELEHUB_HTTP_PORT"] == "9100" and Path(env["TELEHUB_DATA"]).is_absolute()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_PORT", "eighty"),
        ("DICOM_PORT", "70000"),
        ("AE_TITLE", "A" * 17),
        ("EMBEDDED_WORKER", "maybe"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"TELEHUB_{name}", value)
    with pytest.raises(ConfigError):
        Settings.load()
