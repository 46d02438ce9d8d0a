"""paystream: payment-provider notifications, polls and sync results as one payment-status stream.

This package holds what every process shares: configuration (:mod:`paystream.config`), logging
(:mod:`paystream.logs`), metrics (:mod:`paystream.metrics`), Kafka client set-up
(:mod:`paystream.kafka`), the exception hierarchy (:mod:`paystream.errors`) and the CLI
(:mod:`paystream.cli`). The processes themselves live in ``ingest/`` and ``processors/``; the
contracts in ``schemas/``.
"""

__version__ = "0.1.0"
