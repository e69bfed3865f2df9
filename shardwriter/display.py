"""How a source view is meant to be displayed: its orientation (the container's display
matrix) and its colour (range, matrix, primaries, transfer). Pure functions of plain values.

The reference is the FFmpeg CLI: `ffmpeg -i SRC -f rawvideo -pix_fmt rgb24 -` shows a view
rotated and flipped by its display matrix (fftools' autorotate), and converted to RGB with
the stream's colour matrix and range, BT.601 limited range where the stream says nothing.
"""

from __future__ import annotations

import dataclasses
import math

# FFmpeg's enum codes are those of ITU-T H.273; names as av_color_*_name() (and ffprobe) print them.
# PyAV exposes the codes but not the names.
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}
MATRIX_NAMES = {
    0: "gbr", 1: "bt709", 2: "unknown", 3: "reserved", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c",
    14: "ictcp",
}
PRIMARIES_NAMES = {
    0: "reserved", 1: "bt709", 2: "unknown", 3: "reserved", 4: "bt470m", 5: "bt470bg", 6: "smpte170m",
    7: "smpte240m", 8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
TRANSFER_NAMES = {
    0: "reserved", 1: "bt709", 2: "unknown", 3: "reserved", 4: "bt470m", 5: "bt470bg", 6: "smpte170m",
    7: "smpte240m", 8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
    13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}
RANGE_TV, RANGE_PC = 1, 2
MATRIX_BT601 = 6  # smpte170m: what swscale (and so the FFmpeg CLI) uses for an untagged stream
# Matrices swscale converts with (AVCOL_SPC_*): anything else is read as BT.601 by the CLI too.
YUV_MATRICES = frozenset({1, 4, 5, 6, 7, 9, 10})
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}


def _name(table: dict[int, str], code: int) -> str:
    return table.get(code, f"unknown-{code}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Colour:
    """A stream's colour description, as FFmpeg's enum codes (ITU-T H.273)."""

    range: int = 0
    matrix: int = 2
    primaries: int = 2
    transfer: int = 2

    def describe(self) -> dict[str, str]:
        return {
            "range": _name(RANGE_NAMES, self.range),
            "matrix": _name(MATRIX_NAMES, self.matrix),
            "primaries": _name(PRIMARIES_NAMES, self.primaries),
            "transfer": _name(TRANSFER_NAMES, self.transfer),
        }


def clip_colour(source: Colour, yuv: bool) -> Colour:
    """The colour a clip is written with: the source's own, with the matrix and range that
    decide its RGB made explicit where the source leaves them to the decoder's guess.

    An untagged YUV stream is BT.601 limited range to the FFmpeg CLI (swscale's default);
    writing that into the clip makes every decoder, including players that guess BT.709 for
    HD sizes, read the clip's colours as the CLI read the source. An RGB source is converted
    by swscale with that same default. Primaries and transfer do not enter the YUV -> RGB
    conversion; they are carried as the source has them (unknown stays unknown).
    """
    matrix = source.matrix if yuv and source.matrix in YUV_MATRICES else MATRIX_BT601
    rng = source.range if yuv and source.range in (RANGE_TV, RANGE_PC) else RANGE_TV
    return Colour(range=rng, matrix=matrix, primaries=source.primaries, transfer=source.transfer)


# ---- orientation -------------------------------------------------------------------------

Matrix = tuple[int, ...]  # the 3x3 display matrix, row-major, 16.16 fixed point (30.2 last column)
Filters = tuple[tuple[str, str | None], ...]  # libavfilter (name, args), in order


def display_rotation(matrix: Matrix | None) -> float:
    """The counter-clockwise rotation of a display matrix in degrees, as av_display_rotation_get
    computes it (and ffprobe prints it: "rotation of 90.00 degrees"); 0 without a matrix,
    NaN for a degenerate one."""
    if matrix is None:
        return 0.0
    m0, m1, m3, m4 = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale0, scale1 = math.hypot(m0, m3), math.hypot(m1, m4)
    if scale0 == 0.0 or scale1 == 0.0:
        return math.nan
    return -math.degrees(math.atan2(m1 / scale1, m0 / scale0))


def mirrored(matrix: Matrix | None) -> bool:
    """True when the matrix flips the picture (a negative determinant of its 2x2 part)."""
    return matrix is not None and matrix[0] * matrix[4] - matrix[1] * matrix[3] < 0


def orientation_filters(matrix: Matrix | None) -> Filters:
    """The filters that show a frame as the display matrix says: the same choice the FFmpeg
    CLI's autorotate makes (fftools ffmpeg_filter.c: transpose, hflip, vflip). Raises
    ValueError for an angle that is not a multiple of 90 degrees (the CLI would rotate by
    resampling into a frame of the stored size, cutting the corners off)."""
    if matrix is None:
        return ()
    ccw = display_rotation(matrix)
    if math.isnan(ccw):  # a degenerate matrix: the CLI's last branch
        return (("vflip", None),) if matrix[4] < 0 else ()
    theta = -math.copysign(math.floor(abs(ccw) + 0.5), ccw)  # clockwise, C's round(): fftools' get_rotation()
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (("transpose", "cclock_flip" if matrix[3] > 0 else "clock"),)
    if abs(theta - 180) < 1:
        return tuple((name, None) for name, flip in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if flip)
    if abs(theta - 270) < 1:
        return (("transpose", "clock_flip" if matrix[3] < 0 else "cclock"),)
    if abs(theta) > 1:
        raise ValueError(f"the display matrix rotates by {ccw:.4g} degrees (counter-clockwise, as ffprobe prints it), "
                         "not a multiple of 90")
    return (("vflip", None),) if matrix[4] < 0 else ()


def transposed(filters: Filters) -> bool:
    """True when the filters swap width and height."""
    return any(name == "transpose" for name, _ in filters)
