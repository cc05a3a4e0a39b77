"""2D raster files (PNG, JPEG, TIFF, BMP): read into and written from :class:`~.core.Image`.

**Geometry.** A picture of R rows and C columns becomes an array ``(R, C)`` (grayscale) or ``(3, R, C)``
(colour; channels red, green, blue): row r, column c of the picture is ``array[r, c]``, the ITK index
``(x=c, y=r)``, so x runs to the right and y down the picture. Origin ``(0, 0)`` and identity direction (raster
files hold neither). Spacing ``(x, y)`` in mm comes from the file's resolution metadata when it has a physical
unit: PNG ``pHYs`` (pixels per metre), TIFF ``XResolution``/``YResolution`` in inches or centimetres (or an
ImageJ ``unit`` such as µm), JPEG JFIF density or EXIF resolution in inches or centimetres, BMP pixels per
metre. Without it the spacing is 1.0, logged, and counts as pixel units (:func:`raster_has_physical_spacing`).
With ``pages="stack"`` the pages of a file are a 3D image, z = page, z spacing 1.0 (or ImageJ's ``spacing``).

**Values** are kept as stored: ``uint8``; ``uint16`` (16-bit PNG and TIFF); ``int16``, ``int32``, ``uint32``,
``float32``, ``float64`` (TIFF); 1-bit pictures as ``uint8`` 0/1. RGB gives 3 channels; an alpha channel (RGBA,
grayscale + alpha) is dropped with a logged note. Refused, with the reason: palette (indexed-colour) pictures,
whose values are indices into a colour table (``palette="indices"`` reads the indices, as label masks stored that
way need); several pages or frames (multi-page TIFF, animated PNG) unless ``pages="stack"``; CMYK and other
colour spaces; truncated or corrupt files (PNG chunk checksums, compressed streams and data lengths are checked
by the decoders, never filled with zeros).

**Libraries.** SimpleITK (2.5) reads these formats, but not correctly enough: it ignores PNG ``pHYs``, expands
palette PNGs to RGB, cannot read grayscale + alpha PNGs, reads 8-bit grayscale BMPs as RGB, fills truncated
JPEG and BMP files with grey or zeros, and reads tiled, planar or bilevel TIFFs as 8-bit RGBA. So Pillow reads
and writes PNG, JPEG and BMP (SimpleITK decodes only 16-bit colour PNGs, which Pillow reduces to 8 bits), and
tifffile reads and writes TIFF. Pages whose compression tifffile cannot decode without the optional
``imagecodecs`` package (LZW, JPEG, CCITT) are decoded by Pillow, accepted only when Pillow gives the exact
shape and type tifffile reports.

**Writing** (:func:`write_raster`) never rescales values; the write is atomic and read back before the file
takes its name. See :func:`write_raster` for what each format takes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_path
from ..errors import InputError
from .core import Image
from .sitk_files import sitk_read_step

if TYPE_CHECKING:
    from PIL.Image import Image as Picture

logger = logging.getLogger(__name__)

RASTER_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File extensions of the 2D raster formats (any case)."""

LOSSY_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg")
"""File extensions of the lossy raster formats (JPEG): they cannot hold a label map, whose values their compression
changes at every edge (:func:`check_label_format`; :func:`write_raster` refuses label maps in them)."""

COLOR_CHANNEL_NAMES: tuple[str, str, str] = ("red", "green", "blue")
"""Names of the channels of a colour picture, in array order."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""Weights of red, green and blue in :func:`luminance` (ITU-R BT.601 luma, as Pillow's ``convert("L")``), applied to
the stored values without gamma correction."""

FEW_VALUES = 64
"""A single-channel image with at most this many distinct values counts as a label map (JPEG refuses it)."""

Pages = Literal["single", "stack"]
Palette = Literal["refuse", "indices"]

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_PILLOW_OPENS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # formats identified in a non-TIFF name
_ADVICE = "copy or export it again from its source"
_MM_PER_INCH = Fraction(254, 10)
_MM_PER_CM = Fraction(10)
_MM_PER_METRE = Fraction(1000)
_BMP_INCHES_PER_METRE = 39.3701  # the factor Pillow converts BMP pixels per metre with
_UINT32_MAX = 2**32 - 1
_JPEG_QUALITY = 95
# ImageJ's TIFF "unit" -> mm per unit
_IMAGEJ_UNITS = {
    "nm": Fraction(1, 10**6), "micron": Fraction(1, 1000), "microns": Fraction(1, 1000), "um": Fraction(1, 1000),
    "µm": Fraction(1, 1000), "μm": Fraction(1, 1000), "\\u00b5m": Fraction(1, 1000), "mm": Fraction(1),
    "cm": Fraction(10), "m": Fraction(1000), "meter": Fraction(1000), "inch": _MM_PER_INCH, "in": _MM_PER_INCH,
}  # fmt: skip
# TIFF photometric interpretations read as intensities (0 MinIsWhite, 1 MinIsBlack, 2 RGB, 6 YCbCr when JPEG
# compressed) or indices (3)
_TIFF_PHOTOMETRIC = (0, 1, 2, 3, 6)
_TIFF_ALPHA = (1, 2)  # ExtraSamples: associated and unassociated alpha
_TIFF_JPEG = (6, 7)  # old-style and new-style JPEG compression
_TIFF_TYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
)


@dataclass(frozen=True)
class _Resolution:
    """Pixel size from a file's metadata: ``spacing`` (x, y) and ``z`` in mm, None when absent; ``source`` names
    the metadata."""

    spacing: tuple[float, float] | None = None
    z: float | None = None
    source: str = ""


@dataclass(frozen=True)
class _Pixels:
    """What a raster file holds: one ``(y, x)`` or ``(y, x, C)`` array per page (alpha removed, native byte
    order), its resolution, and notes for the log."""

    frames: list[np.ndarray]
    resolution: _Resolution
    notes: tuple[str, ...]


# ----- public -----------------------------------------------------------------------------------------------


def raster_extension(path: str | os.PathLike[str]) -> str | None:
    """The raster extension (lower case) that ``path`` ends with, or ``None``."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in RASTER_EXTENSIONS else None


def is_raster_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name of ``path`` ends with one of :data:`RASTER_EXTENSIONS` (any case)."""
    return raster_extension(path) is not None


def check_label_format(name: str) -> None:
    """Refuse a label-map file name or file type (``.jpg``) in a lossy format (:data:`LOSSY_EXTENSIONS`), with the
    reason."""
    if name.lower().endswith(LOSSY_EXTENSIONS):
        raise InputError(
            f"{name}: JPEG is lossy and would change the label values at every edge; write label maps as .png (or "
            ".tif, .nii.gz, ...)."
        )


def check_raster_options(pages: str, palette: str) -> None:
    """Raise :class:`InputError` unless ``pages`` is ``"single"`` or ``"stack"`` and ``palette`` ``"refuse"`` or
    ``"indices"``."""
    if pages not in ("single", "stack"):
        raise InputError(f'pages must be "single" or "stack", got {pages!r}.')
    if palette not in ("refuse", "indices"):
        raise InputError(f'palette must be "refuse" or "indices", got {palette!r}.')


def luminance(image: Image) -> Image:
    """The luminance of a 3-channel (red, green, blue) ``image`` as one float32 channel (:data:`LUMA_WEIGHTS`)."""
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return image.with_array(np.tensordot(weights, image.array.astype(np.float32, copy=False), axes=1))


_FOLDERS_IN_PIXEL_UNITS: set[Path] = set()
"""Folders whose pictures without a pixel size this process has reported (once per folder, not per file)."""


def _note_pixel_units(path: Path) -> None:
    """Say (at INFO, once per folder; at DEBUG after that) that ``path`` has no pixel size and is in pixel units."""
    folder = path.resolve().parent
    first = folder not in _FOLDERS_IN_PIXEL_UNITS
    _FOLDERS_IN_PIXEL_UNITS.add(folder)
    logger.log(
        logging.INFO if first else logging.DEBUG,
        "%s has no pixel size in its metadata; a spacing of 1.0 per pixel (pixel units) is used%s.",
        path,
        " (said once for this folder)" if first else "",
    )


def read_raster(path: str | os.PathLike[str], *, pages: Pages = "single", palette: Palette = "refuse") -> Image:
    """Read a PNG, JPEG, TIFF or BMP file as a 2D :class:`Image` (3D with ``pages="stack"``); see the module
    docstring for the geometry, the values and what is refused."""
    path = Path(path)
    check_raster_options(pages, palette)
    pixels = _load(path, pages=pages, palette=palette)
    for note in pixels.notes:
        logger.info("%s: %s.", path, note)
    resolution = pixels.resolution
    if resolution.spacing is None:
        _note_pixel_units(path)
    else:
        logger.debug("%s: spacing %s mm from its %s.", path, resolution.spacing, resolution.source)
    spacing = resolution.spacing or (1.0, 1.0)
    stack = pages == "stack"
    array = np.stack(pixels.frames) if stack else pixels.frames[0]
    if array.ndim == (4 if stack else 3):
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))
    if stack:
        spacing = (*spacing, resolution.z or 1.0)
    return Image.from_array(array, spacing=spacing, spatial_dims=len(spacing))


def raster_has_physical_spacing(path: str | os.PathLike[str]) -> bool:
    """Whether the raster file at ``path`` states its pixel size in a physical unit (module docstring); only its
    metadata is read."""
    path = _existing(Path(path))
    with _reading(path):
        if raster_extension(path) in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _tiff_resolution(tif, _main_pages(tif, path)[0]).spacing is not None
        with _open_picture(path) as picture:
            return _picture_resolution(picture).spacing is not None


def write_raster(image: Image, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the 2D ``image`` (or a 3D one with a single slice, z size 1) to a PNG, JPEG, TIFF or BMP file,
    atomically; the format follows the extension. Returns the path written.

    Values are never rescaled; what does not fit the format is refused with the format that keeps it:

    - PNG: grayscale (one channel) as 8-bit when the image is 8-bit or its values fit 0..255, else 16-bit (values
      up to 65535; ``uint16`` images stay 16-bit); RGB (3 channels) with values 0..255. Label maps are kept exactly.
    - BMP: grayscale or RGB with values 0..255.
    - JPEG (lossy, quality 95, no chroma subsampling): grayscale or RGB with values 0..255; label maps are refused
      (images that name labels, or single-channel ones with at most :data:`FEW_VALUES` distinct values).
    - TIFF (deflate-compressed): any channel count (3 channels as RGB), ``uint8``/``int8``/``uint16``/``int16``/
      ``uint32``/``int32``/``float32``/``float64`` (``float16`` is written as ``float32``, 64-bit integers as
      32-bit when they fit). The only raster format for float images.

    ``bool`` is written as 0/1. The spacing is stored in the file's metadata (PNG and BMP: whole pixels per metre,
    so a spacing s is kept exactly when 1000 / s is whole, else rounded with a logged note; TIFF resolution and JPEG
    EXIF resolution: exact fractions of pixels per centimetre); a spacing of exactly 1.0 writes no resolution, so
    the file reads back in pixel units. Origin and direction are not stored (logged when not the defaults).
    Raises :class:`~MedSegCNNLib.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    target = Path(path)
    extension = raster_extension(target)
    if extension is None:
        raise InputError(f"Cannot write {target}: not a raster file name; use one of {', '.join(RASTER_EXTENSIONS)}.")
    kind = _FORMATS[extension]
    lossless = extension not in LOSSY_EXTENSIONS
    array = _planar(image, target, kind)
    if not lossless:
        _refuse_label_map_as_jpeg(image, array, target)
    array = _tiff_values(array, target) if kind == "TIFF" else _integer_values(array, target, kind)
    stored = _stored_resolution(image.spacing[:2], kind, target)
    if not np.allclose(image.origin, 0.0) or not np.allclose(image.direction, np.eye(image.spatial_dims)):
        logger.info(
            "%s: %s files store no origin or orientation; origin %s and the direction are not kept.",
            target,
            kind,
            tuple(round(o, 4) for o in image.origin),
        )
    verify = _written_like(array, stored, lossless=lossless)
    with atomic_path(target, overwrite=overwrite, verify=verify) as tmp:
        _save(array, tmp, kind, stored)
    return target


# ----- reading ----------------------------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"Input file {path} does not exist (or is a folder); check the path.")
    return path


def _load(path: Path, *, pages: Pages, palette: Palette) -> _Pixels:
    """The pixels of the raster file ``path`` (see :class:`_Pixels`), checked as the module docstring says."""
    _existing(path)
    notes: list[str] = []
    with _reading(path):
        if raster_extension(path) in (".tif", ".tiff"):
            frames, resolution = _load_tiff(path, pages, palette, notes)
        else:
            frames, resolution = _load_picture(path, pages, palette, notes)
    frames = [frame.astype(frame.dtype.newbyteorder("="), copy=False) for frame in frames]
    return _Pixels(frames, resolution, tuple(dict.fromkeys(notes)))


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the imaging libraries' errors while reading ``path`` into one-line :class:`InputError`s."""
    from PIL import Image as PillowImage
    from PIL import UnidentifiedImageError

    try:
        yield
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"Cannot read {path}: it is not a {_FORMATS[path.suffix.lower()]} image (Pillow cannot identify it); is "
            "it complete and of the type its name says?"
        ) from None
    except PillowImage.DecompressionBombError as error:
        raise InputError(f"Cannot read {path}: {error}; is this picture really that large?") from None
    except OSError as error:
        if error.errno is not None:
            raise InputError(
                f"Cannot read {path}: {error.strerror or error}; check the file and its permissions."
            ) from None
        raise InputError(f"{path} is truncated or corrupt: {_reason(error)}; {_ADVICE}.") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as error:
        raise InputError(f"{path} is truncated or corrupt: {_reason(error)}; {_ADVICE}.") from None


def _reason(error: BaseException) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__


def _many_pages(path: Path, count: int, what: str) -> InputError:
    return InputError(
        f"{path} holds {count} {what}, where one 2D image is expected; read them as a 3D stack, z = page "
        '(read_image(..., pages="stack"); medsegcnn predict --pages stack), or save the one image you mean as a file '
        "of its own."
    )


def _palette_refused(path: Path) -> InputError:
    return InputError(
        f"{path} is a palette (indexed-colour) image: its values are indices into a colour table, not intensities; "
        "convert it to RGB or grayscale (label masks stored as palette indices are read as such, with "
        'read_image(..., palette="indices"), as the dataset and evaluation readers do).'
    )


@contextlib.contextmanager
def _open_picture(path: Path) -> Iterator[Picture]:
    """``path`` opened with Pillow (PNG, JPEG or BMP by content; other formats refused with their name)."""
    from PIL import Image as PillowImage

    with PillowImage.open(path, formats=_PILLOW_OPENS) as picture:
        found = "JPEG" if picture.format == "MPO" else picture.format
        if found not in ("PNG", "JPEG", "BMP"):
            advice = "rename it to .tif" if found == "TIFF" else "convert it to PNG"
            raise InputError(f"Cannot read {path}: it holds a {found} image, not a PNG, JPEG or BMP one; {advice}.")
        yield picture


def _load_picture(path: Path, pages: Pages, palette: Palette, notes: list[str]) -> tuple[list[np.ndarray], _Resolution]:
    """Frames and resolution of a PNG, JPEG or BMP file (by content), read with Pillow."""
    from PIL import Image as PillowImage

    with _open_picture(path) as picture:
        found = "JPEG" if picture.format == "MPO" else picture.format
        if found != _FORMATS[path.suffix.lower()]:
            notes.append(f"it is a {found} file despite its {path.suffix} name; read as {found}")
        count = getattr(picture, "n_frames", 1)
        if found == "JPEG" and count > 1:
            notes.append(f"a multi-picture JPEG ({count} pictures): its first, main picture is read")
            count = 1
        if count > 1 and pages == "single":
            raise _many_pages(path, count, "frames (an animated picture)")
        if found == "PNG":
            with PillowImage.open(path, formats=("PNG",)) as whole:
                whole.verify()  # every chunk's checksum up to the closing IEND chunk
        resolution = _picture_resolution(picture)
        frames = []
        for index in range(count):
            picture.seek(index)
            frames.append(_picture_pixels(picture, path, palette, notes, animated=count > 1))
    return frames, resolution


def _picture_pixels(picture: Picture, path: Path, palette: Palette, notes: list[str], *, animated: bool) -> np.ndarray:
    """The pixels of the current frame of ``picture``: ``(y, x)`` or ``(y, x, 3)``."""
    rawmode = str(picture.tile[0][3]) if picture.format == "PNG" and picture.tile else ""
    if rawmode.startswith("LA;16"):
        raise InputError(
            f"Cannot read {path}: 16-bit grayscale + alpha PNGs are not supported; save it without the alpha channel."
        )
    if rawmode.startswith(("RGB;16", "RGBA;16")):  # Pillow would reduce it to 8 bits
        if animated:
            raise InputError(
                f"Cannot read {path}: 16-bit colour animated PNGs are not supported; save the frames as a multi-page "
                "TIFF."
            )
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        colour = sitk.GetArrayFromImage(sitk_read_step(reader.Execute, path))
        if colour.shape[-1] == 4:
            notes.append("its alpha (transparency) channel is dropped; the red, green and blue channels are read")
        return colour[..., :3]
    picture.load()
    mode = picture.mode
    if mode in ("P", "PA"):
        if palette == "refuse":
            raise _palette_refused(path)
        indices = np.asarray(picture)
        return indices if mode == "P" else indices[..., 0]
    if mode == "1":
        return np.asarray(picture).astype(np.uint8)
    if mode == "I" and rawmode.startswith("I;16"):  # a 16-bit PNG as older Pillow versions open it
        return np.asarray(picture).astype(np.uint16)
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(picture)
    if mode in ("LA", "RGBA"):
        notes.append(
            "its alpha (transparency) channel is dropped; the "
            + ("gray channel is" if mode == "LA" else "red, green and blue channels are")
            + " read"
        )
        return np.asarray(picture)[..., 0] if mode == "LA" else np.asarray(picture)[..., :3]
    if mode in ("RGB", "RGBX"):
        return np.asarray(picture)[..., :3]
    raise InputError(
        f"Cannot read {path}: its pixels are {mode} (not grayscale or RGB); convert it to RGB or grayscale first."
    )


def _picture_resolution(picture: Picture) -> _Resolution:
    """Pixel size from PNG pHYs (pixels per metre), BMP pixels per metre, or JPEG JFIF density or EXIF resolution
    (inches or centimetres); none without a physical unit."""
    info = picture.info
    found = "JPEG" if picture.format == "MPO" else picture.format
    if found in ("PNG", "BMP"):
        dpi = info.get("dpi")  # Pillow's conversion of pixels per metre (PNG: only for the unit metre)
        if not dpi:
            return _Resolution()
        factor = 1 / 0.0254 if found == "PNG" else _BMP_INCHES_PER_METRE
        per_metre = tuple(round(float(d) * factor) for d in dpi)
        what = "pHYs chunk" if found == "PNG" else "header"
        return _per_unit(per_metre, _MM_PER_METRE, f"{found} {what} ({per_metre[0]} x {per_metre[1]} pixels per metre)")
    unit, density = info.get("jfif_unit"), info.get("jfif_density")
    if unit in (1, 2) and density:
        name = "inch" if unit == 1 else "centimetre"
        return _per_unit(density, _MM_PER_INCH if unit == 1 else _MM_PER_CM, f"JFIF density (pixels per {name})")
    exif = picture.getexif()
    unit, x, y = exif.get(0x0128), exif.get(0x011A), exif.get(0x011B)
    if unit in (2, 3) and x is not None and y is not None:
        name = "inch" if unit == 2 else "centimetre"
        return _per_unit((x, y), _MM_PER_INCH if unit == 2 else _MM_PER_CM, f"EXIF resolution (pixels per {name})")
    return _Resolution()


def _per_unit(resolution: Sequence[Any], mm_per_unit: Fraction, source: str) -> _Resolution:
    """Spacing from pixels per unit (numbers or rationals), or none when a value is zero or not finite."""
    try:
        fractions = [_fraction(value) for value in resolution]
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return _Resolution()
    if len(fractions) != 2 or not all(f > 0 for f in fractions):
        return _Resolution()
    x, y = (float(mm_per_unit / f) for f in fractions)
    return _Resolution((x, y), None, source)


def _fraction(value: Any) -> Fraction:
    """A rational (``(numerator, denominator)``, Pillow's IFDRational) or number as an exact fraction."""
    if isinstance(value, tuple):
        return Fraction(int(value[0]), int(value[1]))
    if hasattr(value, "numerator") and hasattr(value, "denominator"):
        return Fraction(int(value.numerator), int(value.denominator))
    return Fraction(float(value))


# ----- TIFF -------------------------------------------------------------------------------------------------


def _main_pages(tif: Any, path: Path) -> list[Any]:
    """The pages of a TIFF file that are images of their own (reduced-resolution copies, e.g. thumbnails, left out)."""
    main = [page for page in tif.pages if not page.is_reduced]
    if not main:
        raise InputError(f"{path} is truncated or corrupt: it holds no readable image; {_ADVICE}.")
    return main


def _load_tiff(path: Path, pages: Pages, palette: Palette, notes: list[str]) -> tuple[list[np.ndarray], _Resolution]:
    """Frames and resolution of a TIFF file, read with tifffile (Pillow for codecs tifffile lacks)."""
    import tifffile

    with _tifffile_warnings() as warnings, tifffile.TiffFile(path) as tif:
        main = _main_pages(tif, path)
        broken = [re.sub(r"^<[^>]*>\s*", "", text) for text in warnings if "offset" in text]
        if broken:  # tifffile stops at a page it cannot find and only warns: the file lost its end
            raise InputError(f"{path} is truncated or corrupt: its chain of pages breaks off ({broken[0]}); {_ADVICE}.")
        if len(main) > 1 and pages == "single":
            raise _many_pages(path, len(main), "pages")
        first = main[0]
        other = next((page for page in main if (page.shape, page.dtype) != (first.shape, first.dtype)), None)
        if other is not None:
            raise InputError(
                f"Cannot read {path} as a stack: its pages differ in size or type (page {other.index} is {other.shape} "
                f"{other.dtype}, page {first.index} {first.shape} {first.dtype}); save them as separate files."
            )
        resolution = _tiff_resolution(tif, first)
        frames = [_tiff_pixels(path, page, palette, notes) for page in main]
    return frames, resolution


@contextlib.contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs at warning level (its only report of a page chain cut short)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(handler)
    try:
        yield messages
    finally:
        tiff_logger.removeHandler(handler)


def _tiff_pixels(path: Path, page: Any, palette: Palette, notes: list[str]) -> np.ndarray:
    """One TIFF page as ``(y, x)`` or ``(y, x, C)`` (alpha removed)."""
    import tifffile

    photometric = int(page.photometric)
    jpeg = int(page.compression) in _TIFF_JPEG
    if photometric not in _TIFF_PHOTOMETRIC or (photometric == 6 and not jpeg):  # YCbCr: JPEG decoders give RGB
        name = getattr(page.photometric, "name", photometric)
        raise InputError(
            f"Cannot read {path}: its pixels are {name} (not grayscale or RGB); convert it to RGB or grayscale first."
        )
    if photometric == 3 and palette == "refuse":
        raise _palette_refused(path)
    if photometric == 0:
        notes.append("it stores 0 as white (MinIsWhite); the values are kept as stored")
    axes = page.axes
    if axes not in ("YX", "YXS", "SYX"):
        raise InputError(f"Cannot read {path}: its pages have axes {axes}, not a 2D picture; save it as a plain TIFF.")
    shape = page.shape if axes != "SYX" else (*page.shape[1:], page.shape[0])
    codec_known = page.compression in tifffile.TIFF.DECOMPRESSORS and page.predictor in tifffile.TIFF.UNPREDICTORS
    if codec_known and page.fillorder == 1:
        array = page.asarray()
        if axes == "SYX":
            array = np.moveaxis(array, 0, -1)
    else:
        array = _pillow_tiff_page(path, page, shape, photometric)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 3:
        extra = tuple(int(e) for e in page.extrasamples)
        samples = array.shape[-1]
        alpha = [samples - len(extra) + i for i, kind in enumerate(extra) if kind in _TIFF_ALPHA]
        if alpha:
            notes.append("its alpha (transparency) channel is dropped")
            array = np.delete(array, alpha, axis=-1)
        if array.shape[-1] == 1:
            array = array[..., 0]
    return array


def _pillow_tiff_page(path: Path, page: Any, shape: tuple[int, ...], photometric: int) -> np.ndarray:
    """A TIFF page whose codec tifffile lacks, decoded by Pillow; refused unless it has exactly the shape and type
    tifffile reports (and is not MinIsWhite, which Pillow inverts)."""
    from PIL import Image as PillowImage

    compression = getattr(page.compression, "name", page.compression)
    array = None
    if photometric != 0:
        with PillowImage.open(path, formats=("TIFF",)) as picture:
            picture.seek(page.index)
            picture.load()
            array = np.asarray(picture)
    same = array is not None and array.shape == shape and array.dtype.newbyteorder("=") == page.dtype.newbyteorder("=")
    if not same:
        raise InputError(
            f"Cannot read {path}: its {compression} compression needs the imagecodecs package for this kind of TIFF; "
            "install it (pip install imagecodecs) or save the file uncompressed or with deflate compression."
        )
    return array


def _tiff_resolution(tif: Any, page: Any) -> _Resolution:
    """Pixel size from the TIFF resolution tags in inches or centimetres, or from an ImageJ unit."""
    tags = page.tags
    x, y = tags.get("XResolution"), tags.get("YResolution")
    if x is None or y is None:
        return _Resolution()
    values = (x.value, y.value)
    unit = int(page.resolutionunit)
    if unit in (2, 3):
        name = "inch" if unit == 2 else "centimetre"
        return _per_unit(values, _MM_PER_INCH if unit == 2 else _MM_PER_CM, f"TIFF resolution (pixels per {name})")
    imagej = tif.imagej_metadata or {}
    mm_per_unit = _IMAGEJ_UNITS.get(str(imagej.get("unit", "")).strip().lower())
    if mm_per_unit is None:
        return _Resolution()
    resolution = _per_unit(values, mm_per_unit, f"TIFF resolution with the ImageJ unit {imagej['unit']}")
    z = imagej.get("spacing")
    if resolution.spacing is not None and isinstance(z, int | float) and np.isfinite(z) and z > 0:
        return _Resolution(resolution.spacing, float(mm_per_unit * Fraction(z)), resolution.source)
    return resolution


# ----- writing ----------------------------------------------------------------------------------------------


def _planar(image: Image, target: Path, kind: str) -> np.ndarray:
    """The pixels of ``image`` as ``(y, x)`` or ``(y, x, C)`` (a single-slice 3D image as 2D; bool as uint8)."""
    array = image.array
    if image.spatial_dims == 3:
        if image.shape[0] != 1:
            raise InputError(
                f"Cannot write {target}: a {kind} file holds one 2D image, and this one is 3D with {image.shape[0]} "
                f"slices (size {image.size}); write .nrrd, .nii.gz or .mha, or one slice per file."
            )
        array = array[:, 0] if image.is_multichannel else array[0]
    if image.is_multichannel:
        array = np.moveaxis(array, 0, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    return np.ascontiguousarray(array)


def _refuse_label_map_as_jpeg(image: Image, array: np.ndarray, target: Path) -> None:
    reason = "it names its labels" if image.labels else ""
    if not reason and array.ndim == 2:
        count = np.unique(array).size
        reason = f"it holds only {count} distinct values" if count <= FEW_VALUES else ""
    if reason:
        raise InputError(
            f"Cannot write {target}: this looks like a label map ({reason}), and JPEG is lossy: it would change the "
            "label values along every edge; write .png (exact at 8 and 16 bits) or .tif."
        )


def _integer_values(array: np.ndarray, target: Path, kind: str) -> np.ndarray:
    """``array`` as the 8- or 16-bit unsigned integers a PNG, BMP or JPEG file stores (values unchanged)."""
    channels = 1 if array.ndim == 2 else array.shape[-1]
    if channels not in (1, 3):
        raise InputError(
            f"Cannot write {target}: a {kind} file holds a grayscale or an RGB image (1 or 3 channels), and this one "
            f"has {channels} channels; write .tif (any number of channels) or .nrrd."
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"Cannot write {target}: {kind} stores whole numbers, and this image holds {array.dtype} values; write "
            ".tif (it keeps floats exactly) or .nrrd (or cast a label map to integers first)."
        )
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    deep = kind == "PNG" and channels == 1
    limit = 65535 if deep else 255
    if low < 0 or high > limit:
        what = f"negative values (min {low})" if low < 0 else f"values up to {high}"
        kinds = "a 16-bit grayscale PNG" if deep else f"a {kind} {'grayscale' if channels == 1 else 'colour'} image"
        raise InputError(
            f"Cannot write {target}: the image holds {what}, and {kinds} stores 0..{limit} (values are never "
            "rescaled); write .tif or .nrrd."
        )
    sixteen = deep and (array.dtype == np.uint16 or high > 255)
    return array.astype(np.uint16 if sixteen else np.uint8, copy=False)


def _tiff_values(array: np.ndarray, target: Path) -> np.ndarray:
    """``array`` in a type TIFF readers take (values unchanged)."""
    if array.dtype in _TIFF_TYPES:
        return array
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
        narrow = np.dtype(np.int32 if array.dtype == np.int64 else np.uint32)
        info = np.iinfo(narrow)
        if not array.size or (info.min <= array.min() and array.max() <= info.max):
            return array.astype(narrow)
        raise InputError(
            f"Cannot write {target}: its values ({array.min()}..{array.max()}) need 64-bit integers, which TIFF "
            "readers do not take; write .nrrd."
        )
    raise InputError(f"Cannot write {target}: TIFF does not store {array.dtype} values; write .nrrd.")


def _stored_resolution(spacing: tuple[float, ...], kind: str, target: Path) -> tuple[Fraction, Fraction] | None:
    """Pixels per metre (PNG, BMP: whole numbers) or per centimetre (TIFF, JPEG: fractions of 32-bit integers)
    that store ``spacing`` (mm); ``None`` for a spacing of exactly 1.0 (pixel units) or one the format cannot
    hold (logged)."""
    if tuple(spacing) == (1.0, 1.0):
        return None
    whole = kind in ("PNG", "BMP")
    unit = _MM_PER_METRE if whole else _MM_PER_CM
    stored = []
    for s in spacing:
        exact = unit / Fraction(s)
        value = Fraction(round(exact)) if whole else exact.limit_denominator(max(1, int(_UINT32_MAX / max(exact, 1))))
        if not 0 < value.numerator <= _UINT32_MAX // (2 if whole else 1):
            logger.warning(
                "%s: a pixel size of %s mm cannot be stored in a %s file; it is written without one (pixel units).",
                target,
                spacing,
                kind,
            )
            return None
        stored.append(value)
    kept = tuple(float(unit / value) for value in stored)
    if kept != tuple(spacing):
        logger.info(
            "%s: %s stores the pixel size as whole pixels per metre; spacing %s mm is stored as %s mm (write .tif to "
            "keep it exactly).",
            target,
            kind,
            tuple(spacing),
            tuple(round(k, 9) for k in kept),
        )
    return stored[0], stored[1]


def _save(array: np.ndarray, file: Path, kind: str, resolution: tuple[Fraction, Fraction] | None) -> None:
    """Write ``array`` (``(y, x)`` or ``(y, x, C)``) to ``file`` as ``kind`` with the pixels per metre (PNG, BMP)
    or per centimetre (TIFF, JPEG) of ``resolution``."""
    if kind == "TIFF":
        import tifffile

        colour = array.ndim == 3
        options: dict[str, Any] = {"photometric": "rgb" if colour and array.shape[-1] == 3 else "minisblack"}
        if colour:
            options["planarconfig"] = "contig"
            if options["photometric"] == "minisblack":
                options["extrasamples"] = ["unspecified"] * (array.shape[-1] - 1)
        if resolution is not None:
            options["resolution"] = tuple((r.numerator, r.denominator) for r in resolution)
            options["resolutionunit"] = "CENTIMETER"
        tifffile.imwrite(file, array, compression="zlib", **options)
        return
    from PIL import Image as PillowImage
    from PIL import TiffImagePlugin

    picture = PillowImage.fromarray(array)
    if kind == "PNG":
        dpi = {} if resolution is None else {"dpi": tuple(float(r) * 0.0254 for r in resolution)}
        picture.save(file, format="PNG", **dpi)
    elif kind == "BMP":
        dpi = (0, 0) if resolution is None else tuple(float(r) / _BMP_INCHES_PER_METRE for r in resolution)
        picture.save(file, format="BMP", dpi=dpi)
    else:
        options = {}
        if resolution is not None:
            exif = PillowImage.Exif()
            exif[0x0128] = 3  # ResolutionUnit: centimetre
            exif[0x011A], exif[0x011B] = (TiffImagePlugin.IFDRational(r.numerator, r.denominator) for r in resolution)
            options["exif"] = exif
        picture.save(file, format="JPEG", quality=_JPEG_QUALITY, subsampling=0, **options)


def _written_like(
    array: np.ndarray, resolution: tuple[Fraction, Fraction] | None, *, lossless: bool
) -> Callable[[Path], None]:
    """A check that a written raster file reads back with ``array``'s shape and type (and values, when lossless)
    and with the pixel size meant."""

    def check(file: Path) -> None:
        pixels = _load(file, pages="single", palette="refuse")
        back = pixels.frames[0]
        if (back.shape, back.dtype) != (array.shape, array.dtype):
            raise InputError(f"it reads back as {back.shape} {back.dtype}, not {array.shape} {array.dtype}")
        if lossless and not np.array_equal(back, array):
            raise InputError("its pixel values read back differently")
        unit = _MM_PER_METRE if file.suffix.lower() in (".png", ".bmp") else _MM_PER_CM
        expected = None if resolution is None else tuple(float(unit / r) for r in resolution)
        found = pixels.resolution.spacing
        if (expected is None) != (found is None) or (
            expected is not None and not np.allclose(found, expected, rtol=1e-12, atol=0)
        ):
            shown = "none (pixel units)" if found is None else f"{found} mm"
            raise InputError(f"it reads back with pixel size {shown}, not {expected or 'none (pixel units)'}")

    return check
