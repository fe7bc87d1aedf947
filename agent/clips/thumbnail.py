"""A JPEG thumbnail of a clip, decoded from its first keyframe (one frame: a few ms at 1080p)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 480
_ERRORS = (av.error.FFmpegError, ValueError, OSError)


def keyframe_jpeg(
    codec: str, extradata: bytes | None, keyframe: bytes, *, width: int = THUMBNAIL_WIDTH, quality: int = 5
) -> bytes | None:
    """JPEG of the picture in ``keyframe`` (a packet of ``codec``, e.g. "h264" or "hevc"), or None.

    ``extradata`` is the stream's (SPS/PPS from the SDP); cameras that repeat parameter sets in-band need
    none. ``quality`` is the mjpeg qscale (2 best .. 31 worst).
    """
    try:
        frame = _decode_one(codec, extradata, keyframe)
    except _ERRORS as exc:
        log.warning("thumbnail: cannot decode the %s keyframe: %s", codec, exc)
        return None
    if frame is None:
        log.warning("thumbnail: the %s keyframe gave no picture", codec)
        return None
    return _encode_jpeg(frame, width, quality)


def _decode_one(codec: str, extradata: bytes | None, keyframe: bytes) -> av.VideoFrame | None:
    decoder = av.CodecContext.create(codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    if extradata:
        decoder.extradata = extradata
    frames = list(decoder.decode(av.Packet(keyframe)))
    frames += decoder.decode(None)  # flush: decoders with delay hand the frame out only now
    return frames[0] if frames else None


def _encode_jpeg(frame: av.VideoFrame, width: int, quality: int) -> bytes:
    width = min(width, frame.width) & ~1
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qscale": str(quality)}
    small.pts = None
    packets = list(encoder.encode(small)) + list(encoder.encode(None))
    return b"".join(bytes(p) for p in packets)
