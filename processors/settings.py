"""Settings of the stream processors (``paystream process``): ``Settings.processor``
(``PAYSTREAM_PROCESSOR__*``, e.g. ``PAYSTREAM_PROCESSOR__STORE=memory://``), defined with the rest of
the configuration in :mod:`paystream.config`."""

from __future__ import annotations

from paystream.config import DAY_S, ProcessorSettings

__all__ = ["DAY_S", "ProcessorSettings"]
