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
