"""Tuning of the fetcher: :class:`paystream.config.FetchSettings` (``Settings.fetch``,
``PAYSTREAM_FETCH__*``), under the name the fetcher's modules use."""

from __future__ import annotations

from paystream.config import FetchSettings as FetchOptions

StripeSweep = str  # "events" (every event) or "undelivered" (delivery_success=false)

__all__ = ["FetchOptions", "StripeSweep"]
