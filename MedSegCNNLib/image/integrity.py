"""Integrity and sanity checks of image files, made from their bytes before SimpleITK reads them.

SimpleITK fills a truncated NIfTI with zeros, reads a ``.nii.gz`` whose gzip checksum is wrong, turns NaN and
infinite NIfTI voxels into 0, and silently replaces a zero, negative or NaN voxel size by 1 mm or a flipped
axis. So the headers of NIfTI-1/-2, NRRD and MetaImage files are parsed here, independently of SimpleITK.

**Completeness** (:func:`check_image_file`; refused with ``<path> is truncated or corrupt: <cause>``):

- compressed data (``.nii.gz``, NRRD ``encoding: gzip`` or ``bzip2``, MetaImage ``CompressedData``, zlib or
  gzip) is inflated in one streaming pass: every stream must reach its end marker with a valid checksum
  (gzip CRC-32 and length, zlib Adler-32; several gzip members follow one another), only zero bytes may
  follow it, and it must inflate to at least the size the header implies;
- uncompressed data (``.nii``, NRRD ``encoding: raw`` attached or in the ``.nhdr``'s data file(s),
  MetaImage ``LOCAL`` or ``ElementDataFile``) must hold at least ``offset + product(sizes) * bytes per
  voxel``; more is allowed (readers ignore trailing bytes);
- a header that cannot be parsed (too short, wrong size field, missing sizes) is refused the same way.
  Text-encoded NRRD/MetaImage data and NRRD data in a type this module does not know are not size-checked.

**Geometry** (:func:`check_header_geometry`). Refused, with the exact value, because every reader would
guess: a spatial voxel size that is zero, negative or not finite (NIfTI ``pixdim[1..3]``, NRRD ``spacings``
of domain axes, MetaImage ``ElementSpacing``), a NRRD space direction of zero length or with non-finite
components, a non-finite or singular MetaImage ``TransformMatrix``, a non-finite origin (NRRD ``space
origin``, MetaImage ``Offset``) and non-finite parameters of a NIfTI qform or sform that is in use (code > 0).
A negative voxel size is refused rather than read with a warning: ITK turns it into a flipped axis, other
tools into its absolute value, and a left-right flip in a segmentation is worse than a stopped run (put the
flip in the direction instead). Allowed: NIfTI ``pixdim[0]`` (qfac; only its sign is used), ``pixdim`` of
non-spatial axes, negative components of NRRD space directions (they are orientations). Warned about, with
the values: a NIfTI sform in use that is singular while a qform is present (ITK then takes the qform).

**Non-finite voxels.** ITK reads NaN and ±inf voxels of NIfTI float data as 0. :func:`inspect_image_file`
records where they are (flat index in file order, which is numpy order), so :mod:`.io` puts them back and
every format reads NaN as NaN; what to do with them is decided where the image is used (replaced with a
warning for prediction, refused in label maps and training images).
"""

from __future__ import annotations

import bz2
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20  # compressed bytes read at a time
_OUT_CHUNK = 4 << 20  # at most this many inflated bytes at a time (label maps inflate 1000-fold)
_GZIP_MAGIC = b"\x1f\x8b"
_ADVICE = "copy or export it again from its source"

# NIfTI datatype code -> bytes per voxel.
_NIFTI_BYTES = {
    2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8, 1536: 16,
    1792: 16, 2048: 32, 2304: 4,
}  # fmt: skip
_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # float datatypes whose NaN/inf ITK reads as 0

# NRRD type names (all spellings of the format) -> bytes per value.
_NRRD_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(
        ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
         "unsigned short int", "uint16", "uint16_t"), 2,
    ),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"), 4),
    **dict.fromkeys(
        ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
         "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), 8,
    ),
    "float": 4,
    "double": 8,
}  # fmt: skip
_NRRD_SPATIAL_KINDS = {"domain", "space", "time", "???"}  # axes whose spacing must be a size

# MetaImage element type -> bytes per value (MetaIO's MET_ValueTypeSize; MET_LONG is 4 bytes).
_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


class _CorruptError(Exception):
    """A reason why a file is truncated or corrupt (becomes an InputError naming the file)."""


@dataclass(frozen=True)
class _DataFile:
    """Where (part of) the voxel data lies: ``start`` bytes into ``path`` begins the stream in ``encoding``
    (``raw``, ``gzip``, ``zlib`` (zlib or gzip), ``bzip2``, or ``text``: not checked); the first ``skip``
    inflated bytes are not voxels (``-1``: the voxels are the last bytes of a raw file)."""

    path: Path
    start: int
    skip: int
    encoding: str


@dataclass
class _Header:
    """What the header says about the data and the geometry."""

    files: tuple[_DataFile, ...]
    data_bytes: int | None  # voxel bytes declared over all files; None when unknown
    problems: list[str] = field(default_factory=list)  # geometry refused, one text each
    warnings: list[str] = field(default_factory=list)
    float_dtype: str | None = None  # NIfTI float data (numpy dtype string) whose NaN/inf ITK reads as 0
    scaling: tuple[float, float] = (1.0, 0.0)  # NIfTI scl_slope, scl_inter as ITK applies them


@dataclass(frozen=True)
class NonFiniteVoxels:
    """NaN/±inf voxels that ITK read as 0: flat indices (numpy order of the whole array) and their values."""

    indices: np.ndarray
    values: np.ndarray

    @property
    def count(self) -> int:
        return int(self.indices.size)

    def restore(self, array: np.ndarray) -> np.ndarray:
        """``array`` (as read by ITK) with the recorded voxels set back to their values; a copy when changed."""
        if not self.count or int(self.indices[-1]) >= array.size:
            return array
        restored = np.array(array, dtype=np.result_type(array.dtype, np.float32), order="C")  # flat = file order
        restored.reshape(-1)[self.indices] = self.values
        return restored


NO_NON_FINITE = NonFiniteVoxels(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


# ----- public checks -----------------------------------------------------------------------------------------


def check_image_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` when the NIfTI, NRRD or MetaImage file at ``path`` is truncated or corrupt.

    Independent of how the file was made (use it to verify a file just written): the header is parsed here,
    compressed data is inflated once with its checksums checked, and the data must be as long as the header
    says (module docstring). Other extensions (and folders) are not checked. Geometry is not judged here.
    """
    path = Path(path)
    header = _parse_or_refuse(path)
    if header is not None:
        _scan_or_refuse(path, header, None)


def check_header_geometry(path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`InputError`) or warn about the spacing, direction and origin in ``path``'s header
    (module docstring); reads the header only."""
    path = Path(path)
    header = _parse_or_refuse(path)
    if header is not None:
        _judge_geometry(path, header)


def inspect_image_file(path: str | os.PathLike[str]) -> NonFiniteVoxels:
    """:func:`check_header_geometry` and :func:`check_image_file` in one pass over the file; returns the
    NIfTI voxels that ITK will read as 0 although they are NaN or infinite (none for other formats)."""
    path = Path(path)
    header = _parse_or_refuse(path)
    if header is None:
        return NO_NON_FINITE
    _judge_geometry(path, header)
    collector = _NonFiniteCollector(header) if header.float_dtype else None
    _scan_or_refuse(path, header, collector)
    return collector.result() if collector is not None else NO_NON_FINITE


# ----- dispatch ----------------------------------------------------------------------------------------------


def _parse_or_refuse(path: Path) -> _Header | None:
    name = path.name.lower()
    if not path.is_file():
        return None
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti_header(path)
        if name.endswith((".nrrd", ".nhdr")):
            return _nrrd_header(path)
        if name.endswith((".mha", ".mhd")):
            return _metaimage_header(path)
    except _CorruptError as error:
        raise InputError(f"{path} is truncated or corrupt: {error}; {_ADVICE}.") from None
    except OSError as error:
        raise InputError(
            f"Cannot read {path}: {error.strerror or error}; check the file and its permissions."
        ) from None
    return None


def _judge_geometry(path: Path, header: _Header) -> None:
    if header.problems:
        raise InputError(
            f"{path} has an unusable geometry in its header: {'; '.join(header.problems)} (readers would silently "
            "make it 1 mm, a flipped axis or a moved image); fix the header, e.g. save the image again with its "
            "true voxel size, orientation and origin."
        )
    for warning in header.warnings:
        logger.warning("%s: %s", path, warning)


def _scan_or_refuse(path: Path, header: _Header, collector: _NonFiniteCollector | None) -> None:
    try:
        _scan(path, header, collector)
    except _CorruptError as error:
        raise InputError(f"{path} is truncated or corrupt: {error}; {_ADVICE}.") from None
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise InputError(f"Cannot read {path}: {error.strerror or error}{where}; check the file.") from None


def _scan(path: Path, header: _Header, collector: _NonFiniteCollector | None) -> None:
    """Inflate or measure every data file; refuse when the voxels are fewer than declared."""
    available = 0
    for part in header.files:
        if part.encoding == "text":
            return
        if not part.path.is_file():
            raise _CorruptError(f"its data file {part.path} is missing")
        if part.encoding == "raw":
            size = part.path.stat().st_size - part.start
            voxels = size if part.skip < 0 else size - part.skip
            if collector is not None and voxels > 0:
                collector.feed_raw(part.path, part.start + max(part.skip, 0))
        else:
            with part.path.open("rb") as stream:
                stream.seek(part.start)
                sink = collector.sink(part.skip) if collector is not None else None
                voxels = _inflate(stream, part.encoding, sink) - part.skip
        available += max(voxels, 0)
    if header.data_bytes is not None and available < header.data_bytes:
        where = "it holds" if all(part.path == path for part in header.files) else _data_files_text(header)
        raise _CorruptError(f"{where} {available} bytes of image data where the header declares {header.data_bytes}")


def _data_files_text(header: _Header) -> str:
    if len(header.files) == 1:
        return f"its data file {header.files[0].path} holds"
    return f"its {len(header.files)} data files hold"


# ----- streams -----------------------------------------------------------------------------------------------


def _inflate(stream: BinaryIO, encoding: str, sink: Callable[[bytes], None] | None) -> int:
    """Inflate ``stream`` from its position to its end marker (checking checksums); the inflated size.

    gzip: further members may follow; after the last only zero bytes may. Reads and inflates in bounded chunks.
    """
    decoded, members = 0, 0
    data = b""
    exhausted = False
    decoder = _decoder(encoding)
    while True:
        if not data and not exhausted:
            data = stream.read(_READ_CHUNK)
            exhausted = not data
        try:
            out = decoder.decompress(data, _OUT_CHUNK) if encoding != "bzip2" else _bz2_step(decoder, data)
        except (zlib.error, OSError, EOFError) as error:
            raise _CorruptError(f"its compressed data is damaged ({error})") from None
        if out:
            decoded += len(out)
            if sink is not None:
                sink(out)
        if decoder.eof:
            members += 1
            tail = decoder.unused_data
            while len(tail) < 2 and (more := stream.read(_READ_CHUNK)):
                tail += more
            if encoding == "gzip" and tail.startswith(_GZIP_MAGIC):
                decoder, data = _decoder(encoding), tail
                continue
            _require_zero_padding(tail, stream)
            return decoded
        data = decoder.unconsumed_tail if encoding != "bzip2" else b""
        if exhausted and not data and not out:
            raise _CorruptError(
                f"its compressed data stops before the end of the {_stream_name(encoding)} stream (after {decoded} "
                "inflated bytes)"
            )


def _bz2_step(decoder: bz2.BZ2Decompressor, data: bytes) -> bytes:
    return decoder.decompress(data, _OUT_CHUNK)


def _decoder(encoding: str) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "zlib":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, detected
    return bz2.BZ2Decompressor()


def _stream_name(encoding: str) -> str:
    return {"gzip": "gzip", "zlib": "zlib", "bzip2": "bzip2"}[encoding]


def _require_zero_padding(tail: bytes, stream: BinaryIO) -> None:
    chunk = tail
    while chunk:
        if chunk.strip(b"\0"):
            raise _CorruptError("unexpected bytes follow the end of its compressed data")
        chunk = stream.read(_READ_CHUNK)


class _NonFiniteCollector:
    """Finds NaN/±inf among the data bytes of a NIfTI float file (fed as raw file or inflated chunks)."""

    def __init__(self, header: _Header) -> None:
        self._dtype = np.dtype(header.float_dtype)
        self._voxels = (header.data_bytes or 0) // self._dtype.itemsize
        self._scaling = header.scaling
        self._indices: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._seen = 0

    def _add(self, values: np.ndarray) -> None:
        values = values[: max(self._voxels - self._seen, 0)]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            self._indices.append(bad + self._seen)
            self._values.append(values[bad].astype(np.float64))
        self._seen += values.size

    def feed_raw(self, path: Path, offset: int) -> None:
        count = min(self._voxels, (path.stat().st_size - offset) // self._dtype.itemsize)
        mapped = np.memmap(path, dtype=self._dtype, mode="r", offset=offset, shape=(count,))
        step = _OUT_CHUNK // self._dtype.itemsize
        for start in range(0, count, step):
            self._add(np.asarray(mapped[start : start + step]))
        del mapped

    def sink(self, skip: int) -> Callable[[bytes], None]:
        """A consumer of inflated bytes whose first ``skip`` bytes are the header."""
        state = {"skip": skip, "carry": b""}
        size = self._dtype.itemsize

        def feed(chunk: bytes) -> None:
            if state["skip"]:
                dropped = min(state["skip"], len(chunk))
                chunk, state["skip"] = chunk[dropped:], state["skip"] - dropped
            chunk = state["carry"] + chunk
            whole = len(chunk) - len(chunk) % size
            state["carry"] = chunk[whole:]
            if whole:
                self._add(np.frombuffer(chunk, dtype=self._dtype, count=whole // size))

        return feed

    def result(self) -> NonFiniteVoxels:
        if not self._indices:
            return NO_NON_FINITE
        values = np.concatenate(self._values)
        slope, inter = self._scaling
        return NonFiniteVoxels(np.concatenate(self._indices), values * slope + inter)


# ----- NIfTI -------------------------------------------------------------------------------------------------


def _nifti_header(path: Path) -> _Header:
    compressed = _starts_with(path, _GZIP_MAGIC)
    raw = _gzip_head(path, 540) if compressed else _file_head(path, 540)
    if len(raw) < 348:
        raise _CorruptError(f"it holds {len(raw)} bytes, too few for a NIfTI header (348)")
    order = next((o for o in "<>" if struct.unpack_from(o + "i", raw, 0)[0] in (348, 540)), None)
    if order is None:
        raise _CorruptError("it does not start with a NIfTI-1 or NIfTI-2 header (header size field is wrong)")
    version = 1 if struct.unpack_from(order + "i", raw, 0)[0] == 348 else 2
    if version == 2 and len(raw) < 540:
        raise _CorruptError(f"it holds {len(raw)} bytes, too few for a NIfTI-2 header (540)")
    fields = _nifti1_fields(raw, order) if version == 1 else _nifti2_fields(raw, order)
    ndim = fields["dim"][0]
    if not 1 <= ndim <= 7:
        raise _CorruptError(f"its NIfTI header gives dim[0] = {ndim}, which must be 1 to 7")
    minimum = 352 if version == 1 else 544
    offset = int(fields["vox_offset"]) if fields["vox_offset"] >= minimum else minimum
    per_voxel = _NIFTI_BYTES.get(fields["datatype"])
    voxels = math.prod(max(int(size), 1) for size in fields["dim"][1 : ndim + 1])
    header = _Header(
        files=(_DataFile(path, 0, offset, "gzip" if compressed else "raw"),),
        data_bytes=None if per_voxel is None else voxels * per_voxel,
    )
    if fields["datatype"] in _NIFTI_FLOATS:
        header.float_dtype = order + _NIFTI_FLOATS[fields["datatype"]]
        slope, inter = fields["scl_slope"], fields["scl_inter"]
        if math.isfinite(slope) and slope != 0 and math.isfinite(inter):
            header.scaling = (slope, inter)
    _nifti_geometry(fields, ndim, header)
    return header


def _nifti1_fields(raw: bytes, order: str) -> dict:
    unpack = struct.unpack_from
    return {
        "dim": unpack(order + "8h", raw, 40),
        "datatype": unpack(order + "h", raw, 70)[0],
        "pixdim": unpack(order + "8f", raw, 76),
        "vox_offset": unpack(order + "f", raw, 108)[0],
        "scl_slope": unpack(order + "f", raw, 112)[0],
        "scl_inter": unpack(order + "f", raw, 116)[0],
        "qform_code": unpack(order + "h", raw, 252)[0],
        "sform_code": unpack(order + "h", raw, 254)[0],
        "quatern": unpack(order + "6f", raw, 256),
        "srow": unpack(order + "12f", raw, 280),
    }


def _nifti2_fields(raw: bytes, order: str) -> dict:
    unpack = struct.unpack_from
    return {
        "dim": unpack(order + "8q", raw, 16),
        "datatype": unpack(order + "h", raw, 12)[0],
        "pixdim": unpack(order + "8d", raw, 104),
        "vox_offset": unpack(order + "q", raw, 168)[0],
        "scl_slope": unpack(order + "d", raw, 176)[0],
        "scl_inter": unpack(order + "d", raw, 184)[0],
        "qform_code": unpack(order + "i", raw, 344)[0],
        "sform_code": unpack(order + "i", raw, 348)[0],
        "quatern": unpack(order + "6d", raw, 352),
        "srow": unpack(order + "12d", raw, 400),
    }


def _nifti_geometry(fields: dict, ndim: int, header: _Header) -> None:
    for axis in range(1, min(ndim, 3) + 1):
        value = fields["pixdim"][axis]
        if not (math.isfinite(value) and value > 0):
            header.problems.append(f"NIfTI voxel size pixdim[{axis}] = {_number(value)}, not positive")
    if fields["qform_code"] > 0 and not all(map(math.isfinite, fields["quatern"])):
        header.problems.append(f"NIfTI qform quaternion and offset {_numbers(fields['quatern'])}, not finite")
    if fields["sform_code"] > 0:
        srow = fields["srow"]
        if not all(map(math.isfinite, srow)):
            header.problems.append(f"NIfTI sform srow_x/y/z = {_numbers(srow)}, not finite")
        elif abs(np.linalg.det(np.array(srow).reshape(3, 4)[:, :3])) < 1e-12:
            text = f"NIfTI sform srow_x/y/z = {_numbers(srow)}, singular"
            if fields["qform_code"] > 0:
                header.warnings.append(f"{text}; it is ignored and the geometry comes from the qform")
            else:
                header.problems.append(text + ", and there is no qform")


def _gzip_head(path: Path, size: int) -> bytes:
    """The first ``size`` inflated bytes of a gzip file (fewer when it is shorter)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    head = b""
    with path.open("rb") as stream:
        while len(head) < size:
            data = decoder.unconsumed_tail or stream.read(1 << 16)
            if not data:
                break
            try:
                head += decoder.decompress(data, size - len(head))
            except zlib.error as error:
                raise _CorruptError(f"its compressed data is damaged ({error})") from None
            if decoder.eof:
                break
    return head


def _file_head(path: Path, size: int) -> bytes:
    with path.open("rb") as stream:
        return stream.read(size)


def _starts_with(path: Path, magic: bytes) -> bool:
    return _file_head(path, len(magic)) == magic


# ----- NRRD --------------------------------------------------------------------------------------------------


def _nrrd_header(path: Path) -> _Header:
    fields, end, trailing = _read_text_header(path, _nrrd_line)
    if "__magic__" not in fields:
        raise _CorruptError("it does not start with an NRRD magic line (NRRD000x)")
    for required in ("type", "sizes", "encoding"):
        if required not in fields:
            raise _CorruptError(f"its NRRD header lacks the '{required}' field")
    try:
        sizes = [int(size) for size in fields["sizes"].split()]
    except ValueError:
        raise _CorruptError(f"its NRRD sizes {fields['sizes']!r} are not integers") from None
    type_name = fields["type"].strip().lower()
    per_value = _NRRD_BYTES.get(type_name)
    if type_name == "block":
        per_value = _int_field(fields, ("block size", "blocksize"), None)
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}.get(
        fields["encoding"].strip().lower(), "text"
    )
    line_skip = _int_field(fields, ("line skip", "lineskip"), 0)
    byte_skip = _int_field(fields, ("byte skip", "byteskip"), 0)
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is None:
        paths = [path]
        start = end
    else:
        paths = _listed_files(path, data_file, trailing)
        start = 0
    files = tuple(
        _DataFile(file, _after_lines(file, start, line_skip), byte_skip if byte_skip >= 0 else -1, encoding)
        for file in paths
    )
    header = _Header(files=files, data_bytes=None if per_value is None else math.prod(sizes) * per_value)
    _nrrd_geometry(fields, len(sizes), header)
    return header


def _nrrd_line(line: str, fields: dict[str, str]) -> bool:
    """Record one NRRD header line; ``False`` at the blank line that ends the header."""
    if not line.strip():
        return False
    key, separator, value = line.partition(":")
    if not fields and line.startswith("NRRD"):
        fields["__magic__"] = line.strip()
    elif separator and not line.startswith("#") and not value.startswith("="):  # "key:=value" is metadata
        fields[key.strip().lower()] = value.strip()
    return not (fields.get("data file", fields.get("datafile", "")).startswith("LIST"))


def _nrrd_geometry(fields: dict[str, str], dims: int, header: _Header) -> None:
    kinds = fields.get("kinds", "").split()
    spatial = [not kinds or index >= len(kinds) or kinds[index] in _NRRD_SPATIAL_KINDS for index in range(dims)]
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)|none", fields["space directions"])
        for vector in filter(None, vectors):
            values = _floats(vector.replace(",", " "))
            if values is None or not all(map(math.isfinite, values)) or not any(values):
                header.problems.append(f"NRRD space direction ({vector}), not a finite non-zero vector")
    elif "spacings" in fields:
        for index, text in enumerate(fields["spacings"].split()):
            value = _floats(text)
            if index < dims and spatial[index] and (value is None or not (math.isfinite(value[0]) and value[0] > 0)):
                header.problems.append(f"NRRD spacing of axis {index} = {text}, not positive")
    if "space origin" in fields:
        values = _floats(fields["space origin"].strip("() ").replace(",", " "))
        if values is None or not all(map(math.isfinite, values)):
            header.problems.append(f"NRRD space origin {fields['space origin']}, not finite")


# ----- MetaImage ---------------------------------------------------------------------------------------------


def _metaimage_header(path: Path) -> _Header:
    fields, end, trailing = _read_text_header(path, _metaimage_line)
    lookup = {key.lower(): value for key, value in fields.items()}
    if "elementdatafile" not in lookup:
        raise _CorruptError("its MetaImage header has no ElementDataFile line (the header is cut off or damaged)")
    sizes = _floats(lookup.get("dimsize", ""))
    if not sizes:
        raise _CorruptError("its MetaImage header has no DimSize")
    element = lookup.get("elementtype", "").upper().removesuffix("_ARRAY")
    per_value = _MET_BYTES.get(element)
    channels = int((_floats(lookup.get("elementnumberofchannels", "1")) or [1])[0])
    binary = lookup.get("binarydata", "True").lower() in ("true", "1")
    compressed = lookup.get("compresseddata", "False").lower() in ("true", "1")
    encoding = "text" if not binary else "zlib" if compressed else "raw"
    skip = int((_floats(lookup.get("headersize", "0")) or [0])[0])
    data_file = lookup["elementdatafile"]
    if data_file.upper() == "LOCAL":
        files = (_DataFile(path, end, 0, encoding),)
    else:
        files = tuple(
            _DataFile(file, 0, -1 if skip < 0 else skip, encoding) for file in _listed_files(path, data_file, trailing)
        )
    voxels = math.prod(int(size) for size in sizes) * max(channels, 1)
    header = _Header(files=files, data_bytes=None if per_value is None else voxels * per_value)
    _metaimage_geometry(lookup, len(sizes), header)
    return header


def _metaimage_line(line: str, fields: dict[str, str]) -> bool:
    if "=" in line:
        key, value = line.split("=", 1)
        fields[key.strip()] = value.strip()
    return not line.strip().lower().startswith("elementdatafile")


def _metaimage_geometry(lookup: dict[str, str], dims: int, header: _Header) -> None:
    spatial = min(dims, 3)
    spacing_key = "elementspacing" if "elementspacing" in lookup else "elementsize"
    if spacing_key in lookup:
        values = _floats(lookup[spacing_key]) or []
        for axis, value in enumerate(values[:spatial]):
            if not (math.isfinite(value) and value > 0):
                header.problems.append(
                    f"MetaImage {_met_key(spacing_key)} = {_numbers(values)}, not positive on axis {axis}"
                )
                break
    matrix_key = next((key for key in ("transformmatrix", "rotation", "orientation") if key in lookup), None)
    if matrix_key is not None:
        values = _floats(lookup[matrix_key])
        if values is None or len(values) != dims * dims or not all(map(math.isfinite, values)):
            header.problems.append(f"MetaImage TransformMatrix = {lookup[matrix_key]}, not finite")
        elif abs(np.linalg.det(np.array(values).reshape(dims, dims))) < 1e-12:
            header.problems.append(f"MetaImage TransformMatrix = {_numbers(values)}, singular")
    origin_key = next((key for key in ("offset", "position", "origin") if key in lookup), None)
    if origin_key is not None:
        values = _floats(lookup[origin_key])
        if values is None or not all(map(math.isfinite, values)):
            header.problems.append(f"MetaImage Offset = {lookup[origin_key]}, not finite")


def _met_key(key: str) -> str:
    return {"elementspacing": "ElementSpacing", "elementsize": "ElementSize"}[key]


# ----- shared text-header helpers ----------------------------------------------------------------------------


def _read_text_header(path: Path, take: Callable[[str, dict[str, str]], bool]) -> tuple[dict[str, str], int, list[str]]:
    """Header fields (via ``take``, which returns ``False`` on the last header line), the byte offset where
    the data begins, and the non-empty lines after the header when the file is a detached header."""
    fields: dict[str, str] = {}
    with path.open("rb") as stream:
        for raw_line in _lines(stream):
            line = _header_text(raw_line).rstrip("\r\n")
            if not take(line, fields):
                break
        end = stream.tell()
        detached = path.suffix.lower() in (".nhdr", ".mhd")
        trailing = _header_text(stream.read(1 << 20)).split() if detached else []
    return fields, end, trailing


def _header_text(data: bytes) -> str:
    """Header bytes as text: UTF-8, as ITK writes the non-ASCII names of data files (the bytes of the name it was
    given); bytes that are not UTF-8 are kept as the file system's own names keep them (surrogate escapes), so a
    name written in another encoding still names its file."""
    return data.decode("utf-8", "surrogateescape")


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Header lines; a header without an end within 64 MiB is damaged."""
    read = 0
    while line := stream.readline(1 << 20):
        read += len(line)
        if read > 64 << 20:
            raise _CorruptError("its text header does not end within 64 MiB")
        yield line


def _listed_files(header_path: Path, spec: str, trailing: list[str]) -> list[Path]:
    """The data files a detached header names: one file, ``LIST`` (the names follow the header), or a
    ``printf`` pattern ``<format> <min> <max> <step>``; relative to the header's folder."""
    folder = header_path.parent
    parts = spec.split()
    if parts and parts[0].upper() == "LIST":
        return [folder / name for name in trailing]
    if len(parts) >= 4 and "%" in parts[0]:
        try:
            first, last, step = int(parts[1]), int(parts[2]), int(parts[3])
        except ValueError:
            raise _CorruptError(f"its data file pattern {spec!r} is damaged") from None
        if step == 0:
            raise _CorruptError(f"its data file pattern {spec!r} has step 0")
        return [folder / (parts[0] % number) for number in range(first, last + (1 if step > 0 else -1), step)]
    return [folder / spec]


def _after_lines(path: Path, start: int, line_skip: int) -> int:
    """The byte offset in ``path`` after ``line_skip`` lines that begin at ``start``."""
    if line_skip <= 0 or not path.is_file():
        return start
    with path.open("rb") as stream:
        stream.seek(start)
        for _ in range(line_skip):
            stream.readline()
        return stream.tell()


def _int_field(fields: dict[str, str], names: tuple[str, ...], default: int | None) -> int | None:
    for name in names:
        if name in fields:
            try:
                return int(fields[name])
            except ValueError:
                raise _CorruptError(f"its header field '{name}' is {fields[name]!r}, not an integer") from None
    return default


def _floats(text: str) -> list[float] | None:
    try:
        return [float(value) for value in text.split()]
    except ValueError:
        return None


def _number(value: float) -> str:
    return f"{value:g}"


def _numbers(values: tuple[float, ...] | list[float]) -> str:
    return " ".join(_number(value) for value in values)
