"""Run the processor worker in a subprocess for the integration tests.

    python tests/processors/processor_worker.py '<Settings JSON>' '<ProcessorSettings JSON>'
"""

from __future__ import annotations

import sys

from paystream.config import Settings
from paystream.logs import configure
from processors.settings import ProcessorSettings
from processors.worker import run_processor

if __name__ == "__main__":
    configure("warning", "console", process="processor-test")
    run_processor(Settings.model_validate_json(sys.argv[1]), ProcessorSettings.model_validate_json(sys.argv[2]))
