"""Captures the golden manifest's clip from a simulated camera with the agent's real capture code.

    PYTHONPATH=. python tests/contract/golden_manifest/recapture.py

Writes request.json (the clip request), clip.mp4, clip.jpg (thumbnail) and capture.json (the capture's
result, as the agent's spool keeps it) next to this file; then
`UPDATE_GOLDEN=1 pytest tests/contract/test_manifest_golden.py` rewrites the golden manifest from them.
Needed only when the capture code changes what it writes.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.clips.session import SessionPool
from agent.clips.spool import CaptureInfo
from camsim.media import MediaLibrary
from camsim.model import CameraSpec
from camsim.rtsp_server import RtspServer
from contract.messages import ClipRequest

HERE = Path(__file__).parent


def clip_request(camera_id: str, start: datetime) -> ClipRequest:
    return ClipRequest(
        district="gangnam", request_id="req-golden-0001", camera_id=camera_id, start=start,
        end=start + timedelta(seconds=0.5), purpose="golden example: assault in progress", priority="112",
        agency="police-112", incident="112-20261205-0001", sent_at=start - timedelta(seconds=1),
    )  # fmt: skip


async def main() -> None:
    spec = CameraSpec("gangnam-00001", "gangnam", "127.75.9.1", rtsp_port=0, main_size=(160, 96), gop=25)
    with tempfile.TemporaryDirectory() as media_dir:
        server = RtspServer(spec, MediaLibrary(Path(media_dir), loop_s=4.0))
        await server.start()
        pool = SessionPool()
        try:
            request = clip_request(spec.camera_id, datetime.now(UTC) + timedelta(seconds=1))
            url = f"rtsp://admin:admin@{spec.host}:{server.port}/stream1"
            result = await asyncio.to_thread(
                pool.capture, spec.camera_id, url, request.start, request.end, HERE / "clip.mp4"
            )
        finally:
            await asyncio.to_thread(pool.close)
            await server.stop()
    assert result.size_bytes > 0 and result.thumbnail_jpeg, result.error
    (HERE / "clip.mp4.progress.json").unlink(missing_ok=True)  # the capture's crash-recovery sidecar
    (HERE / "clip.jpg").write_bytes(result.thumbnail_jpeg)
    info = CaptureInfo(
        covered_start=result.covered_start, covered_end=result.covered_end,
        wallclock_source=result.wallclock_source, size_bytes=result.size_bytes, sha256=result.sha256,
        codec=result.codec, width=result.width, height=result.height, complete=result.complete,
        error=result.error,
    )  # fmt: skip
    (HERE / "capture.json").write_text(info.model_dump_json(indent=1) + "\n", encoding="utf-8")
    (HERE / "request.json").write_text(request.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"clip.mp4: {result.size_bytes} bytes, {result.covered_start} .. {result.covered_end}")


if __name__ == "__main__":
    asyncio.run(main())
