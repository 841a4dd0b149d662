"""The container health check: exit 0 when the scheduler's /health/ready answers 200, else 1.

It asks 127.0.0.1 on ``SX_HTTP_PORT`` (default 8080) and uses only the standard library, so it runs in
the slim image without curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('SX_HTTP_PORT', '8080')}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
