"""bench/results/latency.png: latency percentiles against offered load, drawn without a plotting library.

A chart of four lines needs no matplotlib (tens of megabytes of compiled dependencies for one picture in
a benchmark): this module rasterizes lines, squares and 5x7 bitmap text into an RGB buffer and writes it as
a PNG with the standard library (zlib + struct). The y axis is logarithmic, because a saturated pipeline
moves p99 by orders of magnitude.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

Color = tuple[int, int, int]

# The classic 5x7 font: five column bytes per glyph, bit 0 = top row.
_FONT: dict[str, tuple[int, ...]] = {
    " ": (0, 0, 0, 0, 0), ".": (0, 0x60, 0x60, 0, 0), ",": (0, 0x50, 0x30, 0, 0),
    "/": (0x20, 0x10, 0x08, 0x04, 0x02), "-": (0x08,) * 5, "(": (0, 0x1C, 0x22, 0x41, 0),
    ")": (0, 0x41, 0x22, 0x1C, 0), ":": (0, 0x36, 0x36, 0, 0), "%": (0x23, 0x13, 0x08, 0x64, 0x62),
    "=": (0x14,) * 5, "<": (0x08, 0x14, 0x22, 0x41, 0), ">": (0, 0x41, 0x22, 0x14, 0x08),
    "+": (0x08, 0x08, 0x3E, 0x08, 0x08), "_": (0x40,) * 5,
    "0": (0x3E, 0x51, 0x49, 0x45, 0x3E), "1": (0, 0x42, 0x7F, 0x40, 0), "2": (0x42, 0x61, 0x51, 0x49, 0x46),
    "3": (0x21, 0x41, 0x45, 0x4B, 0x31), "4": (0x18, 0x14, 0x12, 0x7F, 0x10), "5": (0x27, 0x45, 0x45, 0x45, 0x39),
    "6": (0x3C, 0x4A, 0x49, 0x49, 0x30), "7": (0x01, 0x71, 0x09, 0x05, 0x03), "8": (0x36, 0x49, 0x49, 0x49, 0x36),
    "9": (0x06, 0x49, 0x49, 0x29, 0x1E),
    "A": (0x7E, 0x11, 0x11, 0x11, 0x7E), "B": (0x7F, 0x49, 0x49, 0x49, 0x36), "C": (0x3E, 0x41, 0x41, 0x41, 0x22),
    "D": (0x7F, 0x41, 0x41, 0x22, 0x1C), "E": (0x7F, 0x49, 0x49, 0x49, 0x41), "F": (0x7F, 0x09, 0x09, 0x09, 0x01),
    "G": (0x3E, 0x41, 0x49, 0x49, 0x7A), "H": (0x7F, 0x08, 0x08, 0x08, 0x7F), "I": (0, 0x41, 0x7F, 0x41, 0),
    "J": (0x20, 0x40, 0x41, 0x3F, 0x01), "K": (0x7F, 0x08, 0x14, 0x22, 0x41), "L": (0x7F, 0x40, 0x40, 0x40, 0x40),
    "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F), "N": (0x7F, 0x04, 0x08, 0x10, 0x7F), "O": (0x3E, 0x41, 0x41, 0x41, 0x3E),
    "P": (0x7F, 0x09, 0x09, 0x09, 0x06), "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E), "R": (0x7F, 0x09, 0x19, 0x29, 0x46),
    "S": (0x46, 0x49, 0x49, 0x49, 0x31), "T": (0x01, 0x01, 0x7F, 0x01, 0x01), "U": (0x3F, 0x40, 0x40, 0x40, 0x3F),
    "V": (0x1F, 0x20, 0x40, 0x20, 0x1F), "W": (0x3F, 0x40, 0x38, 0x40, 0x3F), "X": (0x63, 0x14, 0x08, 0x14, 0x63),
    "Y": (0x07, 0x08, 0x70, 0x08, 0x07), "Z": (0x61, 0x51, 0x49, 0x45, 0x43),
    "a": (0x20, 0x54, 0x54, 0x54, 0x78), "b": (0x7F, 0x48, 0x44, 0x44, 0x38), "c": (0x38, 0x44, 0x44, 0x44, 0x20),
    "d": (0x38, 0x44, 0x44, 0x48, 0x7F), "e": (0x38, 0x54, 0x54, 0x54, 0x18), "f": (0x08, 0x7E, 0x09, 0x01, 0x02),
    "g": (0x0C, 0x52, 0x52, 0x52, 0x3E), "h": (0x7F, 0x08, 0x04, 0x04, 0x78), "i": (0, 0x44, 0x7D, 0x40, 0),
    "j": (0x20, 0x40, 0x44, 0x3D, 0), "k": (0x7F, 0x10, 0x28, 0x44, 0), "l": (0, 0x41, 0x7F, 0x40, 0),
    "m": (0x7C, 0x04, 0x18, 0x04, 0x78), "n": (0x7C, 0x08, 0x04, 0x04, 0x78), "o": (0x38, 0x44, 0x44, 0x44, 0x38),
    "p": (0x7C, 0x14, 0x14, 0x14, 0x08), "q": (0x08, 0x14, 0x14, 0x18, 0x7C), "r": (0x7C, 0x08, 0x04, 0x04, 0x08),
    "s": (0x48, 0x54, 0x54, 0x54, 0x20), "t": (0x04, 0x3F, 0x44, 0x40, 0x20), "u": (0x3C, 0x40, 0x40, 0x20, 0x7C),
    "v": (0x1C, 0x20, 0x40, 0x20, 0x1C), "w": (0x3C, 0x40, 0x30, 0x40, 0x3C), "x": (0x44, 0x28, 0x10, 0x28, 0x44),
    "y": (0x0C, 0x50, 0x50, 0x50, 0x3C), "z": (0x44, 0x64, 0x54, 0x4C, 0x44),
}

WHITE, BLACK, GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
BLUE, RED, LIGHT_BLUE, LIGHT_RED = (31, 119, 180), (214, 39, 40), (150, 190, 225), (240, 160, 160)


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            at = 3 * (y * self.width + x)
            self.pixels[at:at + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                self.dot(x, y, color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 1,
             dash: int = 0) -> None:
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0))))
        half = width // 2
        for step in range(steps + 1):
            if dash and (step // dash) % 2:
                continue
            x = round(x0 + (x1 - x0) * step / steps)
            y = round(y0 + (y1 - y0) * step / steps)
            self.rect(x - half, y - half, x - half + width - 1, y - half + width - 1, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> int:
        """Draws ``text`` with its top-left at (x, y); returns the x after it."""
        for char in text:
            columns = _FONT.get(char, _FONT.get(char.upper(), _FONT[" "]))
            for cx, bits in enumerate(columns):
                for row in range(7):
                    if bits >> row & 1:
                        top = y + row * scale
                        self.rect(x + cx * scale, top, x + cx * scale + scale - 1, top + scale - 1, color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        rows = b"".join(b"\x00" + bytes(self.pixels[3 * self.width * y:3 * self.width * (y + 1)])
                        for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(
            b"IEND", b"")


def _label(ms: float) -> str:
    return f"{ms:g}" if ms < 1000 else f"{ms / 1000:g} s"


def latency_chart(rates: Sequence[dict[str, float | int | None]], title: str, note: str) -> bytes:
    """``rates``: one dict per offered load with ``offered_per_s`` and any of e2e_p50_ms, e2e_p99_ms,
    http_p50_ms, http_p99_ms."""
    series = [("e2e_p99_ms", "end to end p99", RED, 3, 0), ("e2e_p50_ms", "end to end p50", BLUE, 3, 0),
              ("http_p99_ms", "HTTP 2xx p99", LIGHT_RED, 2, 6), ("http_p50_ms", "HTTP 2xx p50", LIGHT_BLUE, 2, 6)]
    width, height = 1140, 560
    left, right, top, bottom = 90, 300, 70, 90  # the legend lives in the right margin
    canvas = Canvas(width, height)
    values = [float(v) for r in rates for key, *_ in series if isinstance(v := r.get(key), int | float) and v > 0]
    low = 10 ** math.floor(math.log10(min(values))) if values else 1.0
    high = 10 ** math.ceil(math.log10(max(values))) if values else 1000.0
    if high <= low:
        high = low * 10
    max_rate = max(int(r["offered_per_s"] or 0) for r in rates) if rates else 1000

    def px(rate: float) -> float:
        return left + (width - left - right) * rate / (max_rate * 1.1)

    def py(ms: float) -> float:
        span = math.log10(high) - math.log10(low)
        return height - bottom - (height - top - bottom) * (math.log10(ms) - math.log10(low)) / span

    decade = low
    while decade <= high * 1.0001:  # grid and labels per decade
        y = round(py(decade))
        canvas.line(left, y, width - right, y, GRID)
        label = _label(decade)
        canvas.text(left - 10 - 12 * len(label), y - 7, label, scale=2)
        decade *= 10
    for rate in rates:
        x = round(px(float(rate["offered_per_s"] or 0)))
        canvas.line(x, top, x, height - bottom, GRID)
        label = str(rate["offered_per_s"])
        canvas.text(x - 6 * len(label), height - bottom + 12, label, scale=2)
    canvas.line(left, top, left, height - bottom, BLACK, 2)
    canvas.line(left, height - bottom, width - right, height - bottom, BLACK, 2)
    canvas.text(left, 18, title, scale=2)
    canvas.text(left, height - 40, "offered load (deliveries/s)", scale=2)
    canvas.text(left, height - 18, note)
    canvas.text(8, top - 24, "latency, ms (log)", scale=2)

    for key, _name, color, line_width, dash in series:
        points = [(px(float(r["offered_per_s"] or 0)), py(float(v)), bool(r.get(key.replace("_ms", "_is_lower_bound"))))
                  for r in rates if isinstance(v := r.get(key), int | float) and v > 0]
        for (x0, y0, _), (x1, y1, _) in itertools.pairwise(points):
            canvas.line(x0, y0, x1, y1, color, line_width, dash)
        for point_x, point_y, lower_bound in points:
            x, y = round(point_x), round(point_y)
            canvas.rect(x - 5, y - 5, x + 5, y + 5, color)
            if lower_bound:  # a hollow square: at least this much (events still missing counted as late)
                canvas.rect(x - 3, y - 3, x + 3, y + 3, WHITE)
    legend_x, legend_y = width - right + 30, top + 10
    for _key, name, color, line_width, dash in series:
        legend_y += 24
        canvas.line(legend_x, legend_y, legend_x + 40, legend_y, color, line_width, dash)
        canvas.text(legend_x + 50, legend_y - 7, name, scale=2)
    canvas.rect(legend_x + 15, legend_y + 19, legend_x + 25, legend_y + 29, BLACK)
    canvas.rect(legend_x + 17, legend_y + 21, legend_x + 23, legend_y + 27, WHITE)
    canvas.text(legend_x + 50, legend_y + 21, "lower bound (events")
    canvas.text(legend_x + 50, legend_y + 31, "still missing counted")
    canvas.text(legend_x + 50, legend_y + 41, "as late as the wait)")
    return canvas.png()


def write_latency_chart(path: Path, rates: Sequence[dict[str, float | int | None]], title: str, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(latency_chart(rates, title, note))
