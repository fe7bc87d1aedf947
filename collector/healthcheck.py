"""`cctv-collector healthcheck`: exit 0 when the running collector's API answers and its ingest commits.

It asks the collector's own `/v1/healthz` (MQTT subscribed, writer alive, store committing, no stall) on the
configured HTTP port, from inside the same host or container: a container's HEALTHCHECK runs it.
Exit codes: 0 healthy, 1 unhealthy or not answering, 2 configuration error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from collector.config import CollectorSettings

# Parts of /v1/healthz that must hold, and what to say when one does not.
PROBLEMS = {
    "mqtt_subscribed": "not subscribed at the broker",
    "writer_alive": "the index writer has stopped",
    "store_ok": "the index store is failing",
}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def healthz_url(settings: CollectorSettings) -> str:
    host = settings.http.host
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.http.port}/v1/healthz"


def check(settings: CollectorSettings, timeout_s: float) -> list[str]:
    """What is wrong with the running collector; an empty list when it is healthy."""
    url = healthz_url(settings)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http on our own host)
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return [f"the API does not answer at {url}: {reason}"]
    try:
        status: dict[str, Any] = json.loads(body)
    except ValueError:
        return [f"{url} answered something other than JSON"]
    return problems(status)


def problems(status: dict[str, Any]) -> list[str]:
    found = [message for key, message in PROBLEMS.items() if not status.get(key)]
    if status.get("ingest_stalled"):
        found.append(f"ingest stalled: {status.get('queue_depth')} messages wait, nothing committed")
    if status.get("store_error"):
        found.append(f"store error: {status['store_error']}")
    if not found and not status.get("ok"):
        found.append("unhealthy")
    return found
