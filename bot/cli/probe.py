"""`easel health [--ready]`: ask this machine's bot how it is, for Docker's HEALTHCHECK.

Exit 0 when /healthz (or /readyz with --ready) on EASEL_METRICS_PORT answers 200; 1 otherwise,
printing the JSON answer (which says what is wrong) or why there was none."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from bot.runtime.settings import Settings

TIMEOUT_S = 5.0


def probe(settings: Settings, ready: bool) -> int:
    if not settings.metrics_port:
        print("EASEL_METRICS_PORT is not set: there is no health endpoint to ask", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{settings.metrics_port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as error:  # 503: the body says which check failed
        print(error.read().decode(), file=sys.stderr)
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
    return 1
