"""The local cluster's WRITER_SOCKETS: chosen by ``run``, followed by every other command on its DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.settings import ClusterSettings


def test_run_chooses_and_other_commands_follow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    started = LocalCluster(ClusterSettings(data_dir=root, writer_sockets=True))
    started.choose_writer_sockets()
    assert started.writer_sockets() == str(root / "sockets")
    # add-shard or apply without WRITER_SOCKETS=1 still gives nginx and new writers the sockets.
    monkeypatch.delenv("WRITER_SOCKETS", raising=False)
    later = LocalCluster(ClusterSettings(data_dir=root))
    assert later.writer_sockets() == str(root / "sockets")
    # A run without it goes back to TCP.
    later.choose_writer_sockets()
    assert later.writer_sockets() == "" and not (root / "sockets").exists()


def test_never_on_an_entry_host_nor_with_a_path_too_long(tmp_path: Path) -> None:
    cluster = LocalCluster(ClusterSettings(data_dir=tmp_path, writer_sockets=True))
    cluster.choose_writer_sockets()
    cluster.entry_marker.touch()  # its writers are on other hosts
    assert cluster.writer_sockets() == ""
    deep = LocalCluster(ClusterSettings(data_dir=tmp_path / ("d" * 100), writer_sockets=True))
    with pytest.raises(ClusterError, match="shorter DATA_DIR"):
        deep.choose_writer_sockets()


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRITER_SOCKETS", "1")
    assert ClusterSettings.from_env().writer_sockets
    monkeypatch.setenv("WRITER_SOCKETS", "0")
    assert not ClusterSettings.from_env().writer_sockets
