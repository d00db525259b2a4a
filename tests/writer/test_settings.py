"""Writer settings from the environment: defaults, and combinations refused at start."""

from __future__ import annotations

import pytest

from common.settings import SettingsError
from writer.settings import Settings


def test_the_defaults_hold_together(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REACTIONS_COMMIT_WINDOW_MS", "REACTIONS_QUEUE_WAIT_MS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.commit_window_ms / 1000 < settings.queue_wait_s


def test_a_commit_window_as_long_as_the_queue_wait_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every event that lingered that long would be refused unsent.
    monkeypatch.setenv("REACTIONS_QUEUE_WAIT_MS", "50")
    monkeypatch.setenv("REACTIONS_COMMIT_WINDOW_MS", "50")
    with pytest.raises(SettingsError, match="REACTIONS_COMMIT_WINDOW_MS"):
        Settings.from_env()
    monkeypatch.setenv("REACTIONS_COMMIT_WINDOW_MS", "49")
    assert Settings.from_env().commit_window_ms == 49


def test_waiting_for_the_database_is_bounded_per_try_by_named_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REACTIONS_CONNECT_TIMEOUT_MS", "REACTIONS_CONNECT_BACKOFF_MAX_MS"):
        monkeypatch.delenv(name, raising=False)
    assert (Settings.from_env().connect_timeout_s, Settings.from_env().connect_backoff_max_s) == (5.0, 5.0)
    monkeypatch.setenv("REACTIONS_CONNECT_TIMEOUT_MS", "250")
    monkeypatch.setenv("REACTIONS_CONNECT_BACKOFF_MAX_MS", "2000")
    assert (Settings.from_env().connect_timeout_s, Settings.from_env().connect_backoff_max_s) == (0.25, 2.0)
    monkeypatch.setenv("REACTIONS_CONNECT_TIMEOUT_MS", "0")
    with pytest.raises(SettingsError, match="REACTIONS_CONNECT_TIMEOUT_MS"):
        Settings.from_env()


def test_the_socket_directory_is_absolute_and_its_socket_path_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REACTIONS_WRITER_SOCKETS", raising=False)
    monkeypatch.setenv("REACTIONS_PORT", "8101")
    assert Settings.from_env().unix_path is None, "TCP only unless asked"
    monkeypatch.setenv("REACTIONS_WRITER_SOCKETS", "/run/reactions/")
    assert Settings.from_env().unix_path == "/run/reactions/writer-8101.sock"
    monkeypatch.setenv("REACTIONS_WRITER_SOCKETS", "var/sockets")
    with pytest.raises(SettingsError, match="absolute"):
        Settings.from_env()
    monkeypatch.setenv("REACTIONS_WRITER_SOCKETS", "/" + "d" * 100)
    with pytest.raises(SettingsError, match="at most 107 bytes"):
        Settings.from_env()
