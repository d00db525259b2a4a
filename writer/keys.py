"""Typed application keys of the writer."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from writer.batcher import Committer
from writer.batches import Dispatcher
from writer.gate import ListenGate
from writer.health import DatabaseHealth
from writer.metrics import WriterMetrics
from writer.settings import Settings
from writer.settle import Clocks

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
COMMITTER: web.AppKey[Committer] = web.AppKey("committer")
METRICS = web.AppKey("metrics", WriterMetrics)
GATE = web.AppKey("gate", ListenGate)
HEALTH = web.AppKey("health", DatabaseHealth)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
BATCH_POOL = web.AppKey("batch_pool", asyncpg.Pool)
CLOCKS = web.AppKey("clocks", Clocks)
