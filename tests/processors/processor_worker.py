"""Run the processor worker in a subprocess for the integration tests.

    python tests/processors/processor_worker.py '<Settings JSON>' '<ProcessorSettings JSON>' [log level]
"""

from __future__ import annotations

import sys

# jsonschema (imported by confluent_kafka's schema registry, which quixstreams imports) compiles the
# rfc3987_syntax grammar when that package is installed: seconds per worker start on a loaded CI machine.
# The processor never checks the "iri" formats that need it; without it jsonschema skips them.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from paystream.config import Settings  # noqa: E402
from paystream.logs import configure  # noqa: E402
from processors.settings import ProcessorSettings  # noqa: E402
from processors.worker import run_processor  # noqa: E402

if __name__ == "__main__":
    configure(sys.argv[3] if len(sys.argv) > 3 else "warning", "console", process="processor-test")
    run_processor(Settings.model_validate_json(sys.argv[1]), ProcessorSettings.model_validate_json(sys.argv[2]))
