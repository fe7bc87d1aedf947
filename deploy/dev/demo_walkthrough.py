"""The 112 centre's side of `make demo` (deploy/dev/demo.sh starts the stack and runs this): an incident at a
real place, the cameras around it across districts, a clip from the nearest camera of each district, each
downloaded through its presigned URL and decoded as a player would, an agency without rights refused, the
audit records of it all, and what Prometheus saw. Uses only the /v1 API, the URLs it hands out and the
Prometheus query API; tokens come from the environment (POLICE_TOKEN, FIRE_TOKEN, AUDIT_TOKEN).

Exits non-zero when a step does not do what it should, so that the demo's test fails with it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import av
import httpx

CLIP_S = 3  # each clip's window, starting in 2 seconds: the agents cut it from the live stream
PURPOSE = "identify the assailant"


def main() -> int:
    args = _arguments()
    police, fire, auditor = (
        _auth(os.environ[name]) for name in ("POLICE_TOKEN", "FIRE_TOKEN", "AUDIT_TOKEN")
    )
    with httpx.Client(base_url=args.api, timeout=10) as api:
        began = time.time()
        incident, cameras = _open_incident(api, police, args)
        chosen = _nearest_per_district(cameras)
        clips = _request_clips(api, police, incident, chosen)
        delivered = [_deliver(api, police, clip) for clip in clips]
        _refused(api, fire, incident, chosen)
        _audit(api, auditor, incident, began)
    _prometheus(args.prometheus, sum(delivered))
    return 0 if all(delivered) else 1


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True, help="the collector's base URL")
    p.add_argument("--prometheus", required=True, help="Prometheus' base URL")
    p.add_argument("--lat", type=float, required=True)
    p.add_argument("--lon", type=float, required=True)
    p.add_argument("--place", required=True, help="what the place is, for people")
    return p.parse_args()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ok(r: httpx.Response, status: int) -> Any:
    if r.status_code != status:
        sys.exit(f"demo: {r.request.method} {r.request.url.path} answered {r.status_code}: {r.text}")
    return r.json()


def _open_incident(
    api: httpx.Client, auth: dict[str, str], args: argparse.Namespace
) -> tuple[str, list[Any]]:
    who = "a 112 operator (officer-demo, police-112)"
    print(f"== {who} opens an incident at {args.place} ({args.lat}, {args.lon})")
    body = {
        "incident_no": f"112-demo-{int(time.time())}", "service": "112-video", "type": "assault",
        "lat": args.lat, "lon": args.lon, "occurred_at": _iso(-60), "radius_m": 1000, "purpose": PURPOSE,
    }  # fmt: skip
    opened = _ok(api.post("/v1/incidents", json=body, headers=auth), 201)
    incident, cameras = opened["incident"]["incident_id"], opened["cameras"]
    districts = sorted({c["district"] for c in cameras})
    print(
        f"incident {incident}: {len(cameras)} cameras in {len(districts)} districts ({', '.join(districts)})"
    )
    print("the cameras its grant covers, nearest first:")
    for c in cameras:
        print(f"  {c['camera_id']:<16} {c['distance_m']:7.1f} m  bearing {c['bearing_deg']:5.1f}  "
              f"{c['district']:<10} {c['state']:<8}  agent online: {c['agent_online']}")  # fmt: skip
    return incident, cameras


def _nearest_per_district(cameras: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for camera in cameras:  # nearest first
        seen.setdefault(camera["district"], camera)
    return list(seen.values())


def _request_clips(api: httpx.Client, auth: dict[str, str], incident: str, chosen: list[Any]) -> list[Any]:
    ids = [c["camera_id"] for c in chosen]
    print(f"== a {CLIP_S} s clip from the nearest camera of each district, starting in 2 s: {', '.join(ids)}")
    body = {"camera_ids": ids, "start": _iso(2), "end": _iso(2 + CLIP_S)}
    clips: list[Any] = _ok(api.post(f"/v1/incidents/{incident}/clips", json=body, headers=auth), 202)["clips"]
    return clips


def _deliver(api: httpx.Client, auth: dict[str, str], clip: Any) -> bool:
    """Wait for the clip, then play it through its presigned URL (no token: the URL is the credential)."""
    deadline = time.monotonic() + 60
    while True:
        state = _ok(api.get(f"/v1/clips/{clip['clip_id']}", headers=auth), 200)
        if state["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    why = f" ({state['reason']})" if state.get("reason") else ""
    print(f"clip {state['clip_id']} of {state['camera_id']} ({state['district']}): {state['state']}{why}")
    if state["state"] != "succeeded" or not state.get("playback"):
        return False
    print(f"  captured from its {state['source']}, {state['size_bytes']} bytes, "
          f"sha256 {state['sha256'][:16]}..., manifest verified: {state['manifest_verified']}")  # fmt: skip
    video = httpx.get(state["playback"]["url"], timeout=30)
    frames, seconds, codec = _decode(video.content)
    print(f"  played: downloaded {len(video.content)} bytes (HTTP {video.status_code}), "
          f"decoded {frames} frames of {codec}, {seconds:.1f} s")  # fmt: skip
    print(f"  presigned URL, valid until {state['playback']['expires_at']}: {state['playback']['url']}")
    return bool(state["manifest_verified"]) and frames > 0


def _decode(body: bytes) -> tuple[int, float, str]:
    """(frames, seconds, codec) as a player decodes them; 0 frames when it does not play."""
    try:
        with av.open(io.BytesIO(body)) as container:
            stream = container.streams.video[0]
            times = [f.time for f in container.decode(stream) if f.time is not None]
            rate = float(stream.average_rate or 25)
            codec = f"{stream.codec_context.name} {stream.width}x{stream.height}"
    except (av.error.FFmpegError, IndexError) as exc:
        print(f"  does not play: {exc}")
        return 0, 0.0, "-"
    return len(times), (max(times) - min(times) + 1 / rate) if times else 0.0, codec


def _refused(api: httpx.Client, auth: dict[str, str], incident: str, chosen: list[Any]) -> None:
    print("== the 119 centre (firefighter-demo, fire-119) asks for clips under the 112 centre's incident")
    body = {"camera_ids": [chosen[0]["camera_id"]], "start": _iso(-30), "end": _iso(-20)}
    r = api.post(f"/v1/incidents/{incident}/clips", json=body, headers=auth)
    error = r.json().get("error", {})
    print(f"refused: HTTP {r.status_code} {error.get('code')}: {error.get('message')}")
    if r.status_code != 403:
        sys.exit("demo: an agency without rights was not refused")


def _audit(api: httpx.Client, auth: dict[str, str], incident: str, since: float) -> None:
    print("== the audit records (GET /v1/audit as the audit office), each chained to the one before:")
    params = {"since": datetime.fromtimestamp(since - 1, UTC).isoformat(), "limit": 1000}
    page = _ok(api.get("/v1/audit", params=params, headers=auth), 200)
    for entry in page["entries"]:
        r = entry["record"]
        if r["incident"] not in (incident, None) or r["action"] == "audit.read":
            continue
        cameras = ",".join(s["camera_id"] for s in r["subjects"] if s.get("camera_id")) or "-"
        at = datetime.fromtimestamp(r["at"], UTC).strftime("%H:%M:%S")
        print(f"  seq {entry['seq']:>3}  {at}  {r['account']:<17} {r['agency']:<11} {r['action']:<15}"
              f" {r['result']:<8} {r['code']:<18} {cameras}  hash {entry['hash'][:12]}")  # fmt: skip


def _prometheus(url: str, delivered: int) -> None:
    print(f"== what Prometheus saw ({url}/graph):")
    queries = {
        "clip requests by agency and outcome": (
            "sum by (agency, outcome) (cctv_collector_clip_requests_total) > 0"
        ),
        "evidence windows by district and outcome": (
            "sum by (district, outcome) (cctv_collector_evidence_windows_total) > 0"
        ),
        "golden time, incident opened to first playable clip (s)": (
            "sum(cctv_collector_incident_first_clip_seconds_sum)"
            " / sum(cctv_collector_incident_first_clip_seconds_count)"
        ),
        "cameras by district and state": "sum by (district, state) (cctv_collector_cameras)",
    }
    seen = (
        f'sum(cctv_collector_evidence_windows_total{{outcome="delivered"}}) >= {delivered}'
        ' and on () sum(cctv_collector_clip_requests_total{outcome="refused"}) >= 1'
    )
    deadline = time.monotonic() + 30
    while not _query(url, seen):  # scraped every second: wait for the scrape after the last step
        if time.monotonic() > deadline:
            sys.exit("demo: Prometheus did not see the delivered clips and the refusal")
        time.sleep(0.5)
    for title, query in queries.items():
        print(f"  {title}:  {query}")
        for sample in _query(url, query):
            labels = " ".join(f"{k}={v}" for k, v in sorted(sample["metric"].items()))
            print(f"    {labels or 'value'}  {float(sample['value'][1]):g}")


def _query(url: str, query: str) -> list[Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    result: list[Any] = r.json()["data"]["result"]
    return result


def _iso(from_now_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=from_now_s)).isoformat()


if __name__ == "__main__":
    sys.exit(main())
