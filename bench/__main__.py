"""``make bench``: run every benchmark on the local stack, print one table, keep the JSON results."""

from __future__ import annotations

import json
import sys

from bench import ingest


def main() -> int:
    results = ingest.run()
    ingest.RESULTS.parent.mkdir(parents=True, exist_ok=True)
    ingest.RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(ingest.table(results))
    print(f"results: {ingest.RESULTS.relative_to(ingest.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
