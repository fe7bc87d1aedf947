"""Renders the simulated camera picture with numpy, as yuv420p arrays that PyAV encodes.

The picture is a textured pattern scrolling sideways (so frozen-image detection sees motion) with a
burned-in clock ``SS.ff``: seconds and frame within the loop. The scroll makes one full turn per loop,
so the loop is seamless. Image-fault variants change the picture the way a user would see it:
``black`` (lens capped: flat black), ``frozen`` (one still frame), ``blurred`` (out of focus),
``covered`` (an object in front of the lens, a little scene left at the edges).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from camsim.font import draw_text
from camsim.model import ImageFault

Plane = npt.NDArray[np.uint8]
BLACK_Y, GREY_Y, NEUTRAL_C = 16, 48, 128


def box_blur(plane: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float32]:
    """Separable box blur that wraps around both edges (the pattern tiles sideways)."""
    out = plane
    for axis in (0, 1):
        padded = np.concatenate([out.take(range(-radius, 0), axis), out, out.take(range(radius), axis)], axis)
        csum = np.cumsum(padded, axis=axis, dtype=np.float32)
        zero = np.zeros_like(csum.take([0], axis))
        csum = np.concatenate([zero, csum], axis)
        n = out.shape[axis]
        hi = csum.take(range(2 * radius + 1, 2 * radius + 1 + n), axis)
        lo = csum.take(range(n), axis)
        out = ((hi - lo) / (2 * radius + 1)).astype(np.float32)
    return out


class PictureSource:
    """Frames of one picture variant: ``frame(i)`` is loop frame i of ``frames``, as (h*3/2, w) yuv420p."""

    def __init__(self, width: int, height: int, frames: int, fps: int, variant: ImageFault) -> None:
        if width % 2 or height % 4:
            raise ValueError(f"picture size must be even and height a multiple of 4, got {width}x{height}")
        self.width, self.height, self.frames, self.fps, self.variant = width, height, frames, fps, variant
        self._scale = max(1, height // 135)
        self._y, self._u, self._v = self._pattern(blur=variant == "blurred")
        self._still: Plane | None = None

    def _pattern(self, *, blur: bool) -> tuple[Plane, Plane, Plane]:
        w, h = self.width, self.height
        x = np.arange(w, dtype=np.float32)[None, :] / w
        y = np.arange(h, dtype=np.float32)[:, None] / h
        luma = 110 + 45 * np.sin(2 * np.pi * (3 * x + 2 * y)) + 25 * np.sin(2 * np.pi * 23 * x)
        noise = np.random.default_rng(20240601).integers(0, 36, size=(h, w)).astype(np.float32)
        luma = luma + noise - 18
        cx = np.arange(w // 2, dtype=np.float32)[None, :] / (w // 2)
        cy = np.arange(h // 2, dtype=np.float32)[:, None] / (h // 2)
        u = NEUTRAL_C + 30 * np.sin(2 * np.pi * cx) + 10 * np.cos(2 * np.pi * cy)
        v = NEUTRAL_C + 30 * np.cos(2 * np.pi * (cx + cy))
        if blur:
            radius = max(2, w // 60)
            luma, u, v = box_blur(luma, radius), box_blur(u, radius // 2), box_blur(v, radius // 2)

        def tile(a: npt.NDArray[np.float32]) -> Plane:
            return np.tile(np.clip(a, 16, 235).astype(np.uint8), (1, 2))

        return tile(luma), tile(u), tile(v)

    def frame(self, index: int) -> Plane:
        """Loop frame ``index`` (taken modulo the loop length)."""
        index %= self.frames
        if self.variant == "frozen":
            if self._still is None:
                self._still = self._render(0)
            return self._still
        return self._render(index)

    def _render(self, index: int) -> Plane:
        w, h = self.width, self.height
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        y = out[:h]
        u = out[h : h + h // 4].reshape(h // 2, w // 2)
        v = out[h + h // 4 :].reshape(h // 2, w // 2)
        if self.variant == "black":
            y[...], u[...], v[...] = BLACK_Y, NEUTRAL_C, NEUTRAL_C
            return out
        shift = (index * w // self.frames) & ~1
        y[...] = self._y[:, shift : shift + w]
        u[...] = self._u[:, shift // 2 : shift // 2 + w // 2]
        v[...] = self._v[:, shift // 2 : shift // 2 + w // 2]
        if self.variant == "covered":
            top, left, right = int(h * 0.12), int(w * 0.06), int(w * 0.94)
            y[top:, left:right] = GREY_Y
            u[top // 2 :, left // 2 : right // 2] = NEUTRAL_C
            v[top // 2 :, left // 2 : right // 2] = NEUTRAL_C
        self._draw_clock(y, index)
        return out

    def _draw_clock(self, y: Plane, index: int) -> None:
        seconds, frame = divmod(index, self.fps)
        top, left, scale = self.height // 50, self.width // 50, self._scale
        draw_text(y, f"{seconds:02d}.{frame:02d}", top, left, scale)
        if self.variant == "blurred":  # the OSD is part of the out-of-focus picture here
            box = y[top : top + 9 * scale, left : left + 32 * scale]
            box[...] = box_blur(box.astype(np.float32), max(2, scale)).astype(np.uint8)
