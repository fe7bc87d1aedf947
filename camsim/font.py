"""A tiny 5x7 bitmap font to burn clocks and camera ids into simulated pictures with numpy.

Only what an on-screen display needs: digits, upper-case letters (lower case is drawn upper case) and
``- . : / _`` and space; anything else is drawn as ``?``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

GLYPH_W, GLYPH_H = 5, 7
ADVANCE = GLYPH_W + 1  # one column of spacing between glyphs

_ROWS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}

Mask = npt.NDArray[np.bool_]


def _glyph(char: str) -> Mask:
    rows = _ROWS.get(char.upper(), _ROWS["?"]).split()
    return np.array([[bit == "1" for bit in row] for row in rows], dtype=bool)


@lru_cache(maxsize=256)
def text_mask(text: str, scale: int = 1) -> Mask:
    """Boolean mask (rows, cols) of ``text`` drawn at ``scale`` pixels per font pixel."""
    mask = np.zeros((GLYPH_H, max(1, len(text)) * ADVANCE), dtype=bool)
    for i, char in enumerate(text):
        mask[:, i * ADVANCE : i * ADVANCE + GLYPH_W] = _glyph(char)
    if scale > 1:
        mask = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
    mask.flags.writeable = False  # shared through the cache
    return mask


def draw_text(
    plane: npt.NDArray[np.uint8], text: str, top: int, left: int, scale: int, *, fg: int = 235, bg: int = 16
) -> None:
    """Draw ``text`` onto a luma plane in place, on a solid box so it stays legible on any picture."""
    mask = text_mask(text, scale)
    pad = scale
    h, w = mask.shape
    box = plane[top : top + h + 2 * pad, left : left + w + 2 * pad]
    box[...] = bg
    inner = box[pad : pad + h, pad : pad + w]
    inner[mask[: inner.shape[0], : inner.shape[1]]] = fg


def read_text(plane: npt.NDArray[np.uint8], top: int, left: int, scale: int, length: int) -> str:
    """Read back ``length`` glyphs drawn by ``draw_text`` at the same place (nearest glyph per cell).

    Lets tests check a decoded frame's burned-in clock or a snapshot's camera id.
    """
    pad = scale
    cells = plane[top + pad : top + pad + GLYPH_H * scale, left + pad : left + pad + length * ADVANCE * scale]
    lit = cells.astype(np.int16) > (int(cells.max()) + int(cells.min())) // 2
    out = []
    for i in range(length):
        cell = lit[:, i * ADVANCE * scale : (i * ADVANCE + GLYPH_W) * scale]
        cell = cell.reshape(GLYPH_H, scale, GLYPH_W, scale).mean(axis=(1, 3)) > 0.5
        out.append(min(_ROWS, key=lambda char: int(np.count_nonzero(_glyph(char) != cell))))
    return "".join(out)
