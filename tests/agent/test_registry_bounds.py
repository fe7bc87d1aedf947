"""What a camera claims is cut to the contract's bounds before the agent builds a message from it."""

from __future__ import annotations

from agent.onvif_reader import StreamInfo
from agent.registry import _summary, _text
from contract.messages import INT32_MAX


def test_a_camera_bitrate_beyond_the_contract_is_capped() -> None:
    summary = _summary(StreamInfo("main", "h264", 1920, 1080, 25.0, 2**40))
    assert summary.bitrate_kbps == INT32_MAX


def test_camera_text_loses_nul_characters() -> None:
    assert _text("Front\x00Gate") == "FrontGate"
