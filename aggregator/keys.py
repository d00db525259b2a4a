"""Typed application keys of the aggregator."""

from __future__ import annotations

from aiohttp import web

from aggregator.fanout import FanOut
from aggregator.listener import LateWriteListener
from aggregator.live import LiveHours
from aggregator.metrics import AggregatorMetrics
from aggregator.past import PastHours
from aggregator.refresher import Refresher
from aggregator.settings import Settings
from aggregator.shards import ShardSet
from aggregator.source import HourSource

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", AggregatorMetrics)
SHARDS = web.AppKey("shards", ShardSet)
FANOUT = web.AppKey("fanout", FanOut)
LIVE = web.AppKey("live", LiveHours)
PAST = web.AppKey("past", PastHours)
# Where both GETs take every hour's answer from.
HOURS = web.AppKey("hours", HourSource)
REFRESHER = web.AppKey("refresher", Refresher)
# Absent when LISTEN is disabled (settings.listen_for_late_writes).
LISTENER = web.AppKey("listener", LateWriteListener)
