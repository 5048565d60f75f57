"""A bytes-per-mode bar chart (before/after) as a PNG, drawn with zlib and struct only.

No plotting library: rekey's dependencies stay small and the chart is a handful of rectangles and
labels in a 3x5 pixel font. The PNG is 8-bit RGB, one IDAT chunk, filter type 0 on every row, so any
viewer (and a twenty-line test decoder) reads it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from workers.model import Mode

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 720, 360
BACKGROUND = (255, 255, 255)
AXIS = (90, 90, 90)
TEXT = (20, 20, 20)
BEFORE_COLOR = (70, 110, 180)   # blue: the earlier audit
AFTER_COLOR = (230, 130, 30)    # orange: the later audit (or the only one)
MODES = tuple(m.value for m in Mode)

# 3x5 glyphs, rows top to bottom; "#" is ink. Upper case only: labels are upper-cased before drawing.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": ("###", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": ("###", "#..", "#..", "#..", "###"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "F": ("###", "#..", "##.", "#..", "#.."),
    "G": ("###", "#..", "#.#", "#.#", "###"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "K": ("#.#", "#.#", "##.", "#.#", "#.#"),
    "L": ("#..", "#..", "#..", "#..", "###"), "M": ("#.#", "###", "###", "#.#", "#.#"),
    "N": ("##.", "#.#", "#.#", "#.#", "#.#"), "O": ("###", "#.#", "#.#", "#.#", "###"),
    "P": ("###", "#.#", "###", "#..", "#.."), "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": ("###", "#..", "###", "..#", "###"), "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "W": ("#.#", "#.#", "###", "###", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    "-": ("...", "...", "###", "...", "..."), ".": ("...", "...", "...", "...", ".#."),
    " ": ("...", "...", "...", "...", "..."), "J": ("..#", "..#", "..#", "#.#", "###"),
    "Q": ("###", "#.#", "#.#", "###", "..#"), "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "Z": ("###", "..#", ".#.", "#..", "###"), ":": ("...", ".#.", "...", ".#.", "..."),
    "/": ("..#", "..#", ".#.", "#..", "#.."), "_": ("...", "...", "...", "...", "###"),
    "%": ("#.#", "..#", ".#.", "#..", "#.#"),
}
GRID = (225, 225, 225)


@dataclass(frozen=True, slots=True)
class Series:
    """One audit's bytes per mode, with its legend label."""

    label: str
    bytes_by_mode: Mapping[str, int]
    color: tuple[int, int, int]
    objects_by_mode: Mapping[str, int] | None = None


class Canvas:
    """An RGB pixel buffer with the few drawing operations the chart needs; `labels` lists the text drawn."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(BACKGROUND) * (width * height))
        self.labels: list[str] = []

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, x0), min(self.width, x1)
        y0, y1 = max(0, y0), min(self.height, y1)
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def text(self, x: int, y: int, label: str, *, scale: int = 2, color: tuple[int, int, int] = TEXT) -> None:
        self.labels.append(label.upper())
        for i, ch in enumerate(label.upper()):
            glyph = _GLYPHS.get(ch, _GLYPHS[" "])
            for gy, line in enumerate(glyph):
                for gx, ink in enumerate(line):
                    if ink == "#":
                        px, py = x + (i * 4 + gx) * scale, y + gy * scale
                        self.rect(px, py, px + scale, py + scale, color)

    @staticmethod
    def text_width(label: str, scale: int = 2) -> int:
        return max(0, len(label) * 4 - 1) * scale

    def to_png(self) -> bytes:
        rows = b"".join(b"\x00" + bytes(self.pixels[y * self.width * 3:(y + 1) * self.width * 3])
                        for y in range(self.height))
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def human_bytes(n: float) -> str:
    """`9.8 KiB`, binary units as everywhere in rekey (whole numbers from 100 up)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


_NICE = (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)


def nice_ceiling(peak: int) -> int:
    """The y-axis top: four ticks of a round number of B, KiB, MiB... (1, 2, 2.5, 5 x 10^n), at least `peak`."""
    unit = 1
    while peak / 4 / unit > 500:
        unit *= 1024
    step = next(m for m in _NICE if m * unit * 4 >= peak)
    return int(step * unit * 4)


def bar_chart(series: Sequence[Series], *, title: str = "bytes per mode") -> bytes:
    """A grouped bar chart: one group per mode, one bar per series, heights proportional to bytes."""
    return draw_chart(series, title=title).to_png()


def draw_chart(series: Sequence[Series], *, title: str = "bytes per mode") -> Canvas:
    """The chart on a canvas: title and legend, a y axis in binary units with grid lines, under each mode
    its name and, per series in its colour, the objects and bytes. Every label at the 2x font size."""
    canvas = Canvas(WIDTH, HEIGHT)
    left, right, top = 100, WIDTH - 16, 56
    bottom = HEIGHT - 30 - 26 * len(series)
    canvas.text(16, 14, title)
    legend_x = 16 + Canvas.text_width(title) + 40
    for s in series:
        canvas.rect(legend_x, 14, legend_x + 10, 24, s.color)
        canvas.text(legend_x + 16, 14, s.label)
        legend_x += 16 + Canvas.text_width(s.label) + 24
    ceiling = nice_ceiling(max([1, *(int(s.bytes_by_mode.get(m, 0)) for s in series for m in MODES)]))
    for tick in range(5):
        y = bottom - round((bottom - top) * tick / 4)
        canvas.rect(left, y, right, y + 1, GRID if tick else AXIS)
        label = human_bytes(ceiling * tick // 4)
        canvas.text(left - 8 - Canvas.text_width(label), y - 5, label)
    canvas.rect(left, bottom, right, bottom + 2, AXIS)
    canvas.rect(left, top - 10, left + 2, bottom, AXIS)
    group = (right - left) // len(MODES)
    bar = max(8, (group - 24) // max(1, len(series)))
    for gi, mode in enumerate(MODES):
        gx = left + gi * group + 12
        for si, s in enumerate(series):
            value = int(s.bytes_by_mode.get(mode, 0))
            if value > 0:
                height = max(2, round((bottom - top) * value / ceiling))  # a tiny non-zero count stays visible
                x0 = gx + si * bar
                canvas.rect(x0, bottom - height, x0 + bar - 2, bottom, s.color)
            center = gx + (group - 24) // 2
            objects = (s.objects_by_mode or {}).get(mode)
            for line, text in enumerate((f"{objects} obj" if objects is not None else "", human_bytes(value))):
                if text:
                    canvas.text(center - Canvas.text_width(text) // 2, bottom + 30 + si * 26 + line * 12, text,
                                color=s.color)
        canvas.text(gx + (group - 24 - Canvas.text_width(mode)) // 2, bottom + 12, mode)
    return canvas


def bytes_by_mode(audit_json: Mapping[str, object], field: str = "bytes") -> dict[str, int]:
    """`by_mode[mode].bytes` (or `.objects`) from an audit's JSON (missing modes are zero)."""
    by_mode = audit_json.get("by_mode")
    if not isinstance(by_mode, Mapping):
        raise ValueError("not a rekey audit JSON: no by_mode")
    out: dict[str, int] = {}
    for mode in MODES:
        entry = by_mode.get(mode)
        out[mode] = int(entry.get(field, 0)) if isinstance(entry, Mapping) else 0
    return out
