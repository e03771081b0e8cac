"""Is an image file complete? Checks the stored voxel data before SimpleITK reads it.

SimpleITK (ITK 5.4) reads some damaged files without an error, filling what is missing with zeros: a
``.nii.gz`` cut short, an uncompressed ``.nii`` cut short, and compressed NRRD / MetaImage files whose
compressed bytes were overwritten (seen with SimpleITK 2.5; Testing/pytest/test_bad_inputs.py builds each case). A
model would segment such an image and training would learn from it. So before reading, every compressed
stream is decompressed to its end — gzip and bzip2 check their CRC, zlib its Adler-32 — and the number
of decompressed (or stored) bytes is compared with what the header declares (voxels × bytes per voxel).

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD with attached or detached data (``raw``, ``gzip``, ``bzip2``
encodings), MetaImage (``.mha`` / ``.mhd``, ``CompressedData``). Other formats and DICOM are left to the
reader.
"""

from __future__ import annotations

import bz2
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lightunetr_core.vocabulary import InputError

_CHUNK = 1 << 22


class IncompleteImageError(InputError):
    """The file's voxel data is truncated or corrupt; the message names the file and what is wrong."""


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())
    return int(sitk.GetArrayViewFromImage(probe).dtype.itemsize) * max(1, reader.GetNumberOfComponents())


def declared_data_bytes(path: str | os.PathLike) -> int:
    """Bytes of voxel data the header declares (all voxels × bytes per voxel)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return int(np.prod(reader.GetSize(), dtype=np.int64)) * _bytes_per_voxel(reader)


def _drain(decompressor_read, what: str, path: Path) -> int:
    """Decompress a whole stream with ``decompressor_read(n)``; return the byte count."""
    total = 0
    try:
        while True:
            block = decompressor_read(_CHUNK)
            if not block:
                return total
            total += len(block)
    except EOFError:
        raise IncompleteImageError(f"{path}: the {what} data ends before its end marker: the file is truncated "
                                   "(an interrupted copy or download). Copy or export the file again.") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise IncompleteImageError(f"{path}: the {what} data is corrupt ({exc}). Copy or export the file again.") from None


def _gzip_size(path: Path, offset: int = 0) -> int:
    with open(path, "rb") as raw:
        raw.seek(offset)
        with gzip.GzipFile(fileobj=raw) as g:
            return _drain(g.read, "gzip-compressed", path)


def _bzip2_size(path: Path, offset: int = 0) -> int:
    with open(path, "rb") as raw:
        raw.seek(offset)
        with bz2.BZ2File(raw) as b:
            return _drain(b.read, "bzip2-compressed", path)


def _zlib_size(path: Path, offset: int = 0) -> int:
    """A zlib stream (MetaImage ``CompressedData``) decompressed to its end (Adler-32 checked)."""
    d = zlib.decompressobj()
    total = 0
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            while True:
                chunk = raw.read(_CHUNK)
                if not chunk:
                    break
                total += len(d.decompress(chunk))
                if d.eof:
                    break
            total += len(d.flush())
        except zlib.error as exc:
            raise IncompleteImageError(f"{path}: the zlib-compressed data is corrupt ({exc}). Copy or export the "
                                       "file again.") from None
    if not d.eof:
        raise IncompleteImageError(f"{path}: the zlib-compressed data ends before its end marker: the file is "
                                   "truncated (an interrupted copy or download). Copy or export the file again.")
    return total


def _nifti_vox_offset(header: bytes, path: Path) -> int:
    for endian in ("<", ">"):
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] == 348:
            return int(struct.unpack(endian + "f", header[108:112])[0])
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] == 540:
            return int(struct.unpack(endian + "q", header[168:176])[0])
    raise IncompleteImageError(f"{path}: not a NIfTI-1/2 header (sizeof_hdr is neither 348 nor 540): the file is damaged")


def _check_size(path: Path, got: int, expected: int, stored: str) -> None:
    if got < expected:
        raise IncompleteImageError(
            f"{path}: the file holds {got} bytes of {stored} voxel data but its header declares {expected} "
            f"({100 * got / expected:.0f} %): the file is truncated (an interrupted copy or download). Copy or "
            "export the file again.")


def _text_header(path: Path, terminator: bytes) -> tuple[dict, int]:
    """``key: value`` / ``key = value`` header lines up to ``terminator`` and the data offset."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(terminator)
    if end < 0:
        if len(head) < (1 << 16) and terminator == b"\n\n":  # a detached header (.nhdr) ends with the file
            end, terminator = len(head), b""
        else:
            return {}, -1
    fields = {}
    for line in head[:end].decode("latin-1").splitlines():
        for sep in (":=", ":", "="):
            if sep in line and not line.startswith("#"):
                key, _, value = line.partition(sep)
                fields[key.strip().lower()] = value.strip()
                break
    return fields, end + len(terminator)


def check_complete(path: str | os.PathLike) -> None:
    """Raise :class:`IncompleteImageError` when the voxel data of ``path`` is truncated or corrupt."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".nii.gz"):
        total = _gzip_size(p)  # first: a truncated or corrupt stream is reported as such
        with gzip.open(p, "rb") as g:
            header = g.read(544)
        expected = declared_data_bytes(p)
        offset = _nifti_vox_offset(header, p)
        _check_size(p, total - offset, expected, "decompressed")
        return
    expected = declared_data_bytes(p)
    if name.endswith(".nii"):
        with open(p, "rb") as f:
            header = f.read(544)
        _check_size(p, p.stat().st_size - _nifti_vox_offset(header, p), expected, "stored")
    elif name.endswith((".nrrd", ".nhdr")):
        fields, offset = _text_header(p, b"\n\n")
        encoding = fields.get("encoding", "raw").lower()
        data_file = fields.get("data file") or fields.get("datafile")
        target, start = (p.parent / data_file, 0) if data_file else (p, offset)
        if offset < 0 or (data_file and not target.is_file()):
            return  # multi-file or list data files: left to the reader
        if encoding in ("gzip", "gz"):
            _check_size(p, _gzip_size(target, start), expected, "decompressed")
        elif encoding in ("bzip2", "bz2"):
            _check_size(p, _bzip2_size(target, start), expected, "decompressed")
        elif encoding == "raw":
            _check_size(p, target.stat().st_size - start, expected, "stored")
    elif name.endswith((".mha", ".mhd")):
        fields, _ = _text_header(p, b"ElementDataFile")
        with open(p, "rb") as f:
            head = f.read(1 << 16)
        marker = head.find(b"ElementDataFile")
        if marker < 0:
            return
        line_end = head.find(b"\n", marker)
        data_file = head[marker:line_end].decode("latin-1").split("=", 1)[-1].strip()
        target, start = (p, line_end + 1) if data_file.upper() == "LOCAL" else (p.parent / data_file, 0)
        if not target.is_file():
            return
        if fields.get("compresseddata", "false").lower() == "true":
            _check_size(p, _zlib_size(target, start), expected, "decompressed")
        else:
            _check_size(p, target.stat().st_size - start, expected, "stored")
