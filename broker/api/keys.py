"""Typed application keys for the broker's shared resources (made in ``broker.app``)."""

from __future__ import annotations

from aiohttp import web

from auth.cadir import TrustStore
from broker.config import BrokerConfig
from broker.service import Broker

CONFIG = web.AppKey("broker_config", BrokerConfig)
BROKER = web.AppKey("broker", Broker)
SITE_TRUST = web.AppKey("site_trust", TrustStore)
