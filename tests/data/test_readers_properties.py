"""Readers cannot be crashed: any bytes, under any supported name, end in an image or in the reader's own error.

Property-based (hypothesis): random bytes, valid files cut short or with bytes overwritten, and DICOM files with
random header values all give either a 2D finite float32 array or a ``CXRReadError`` naming the file, each within
the deadline. Examples are derandomized (the same on every run) and no example database is written.
Cases are drawn per reader (each PIL decoder, DICOM with and without suffix, NIfTI plain and gzipped), not per
suffix: ``.jpeg``, ``.tiff``, ``.dicom`` and ``.dic`` reach the same code as their twins, which
``test_every_suffix_reaches_its_reader`` checks. ``CI=true`` runs the full count of examples; a local run
(and ``make test-quick``, which unsets CI) a sixth of it, enough to catch a regression in seconds.
"""

from __future__ import annotations

import faulthandler
import gzip
import io
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from bundle.data.readers import SUPPORTED_SUFFIXES, CXRReadError, detect_format, read_cxr, read_raw
from tests.conftest import synthetic_cxr
from tests.data.test_readers import encapsulate, write_dicom

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Examples per reader; the DICOM header test runs 16 times as many. About 10 s on two cores, 40 s with CI=true.
settings.register_profile("readers", max_examples=25, deadline=2000, derandomize=True, database=None, print_blob=False)
settings.register_profile("readers-ci", settings.get_profile("readers"), max_examples=150)
PROFILE = settings.get_profile("readers-ci" if CI else "readers")
HANG_LIMIT_S = 300  # a decoder stuck in C code is past any deadline: dump the stacks and stop the run

# pydicom and numpy warn about the invalid values these files are made of
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".dic", ".nii", ".nii.gz", ""]
# one suffix per reader: each of PIL's decoders, DICOM by suffix and by its preamble, NIfTI plain and gzipped
READERS = {
    "png": ".png",
    "jpeg": ".jpg",
    "bmp": ".bmp",
    "tiff": ".tif",
    "dicom": ".dcm",
    "dicom without suffix": "",
    "nifti": ".nii",
    "nifti gzipped": ".nii.gz",
}
# the other suffixes and the one of READERS they share a reader with
TWINS = {".jpeg": ".jpg", ".tiff": ".tif", ".dicom": ".dcm", ".dic": ".dcm"}
DICM = b"\0" * 128 + b"DICM"  # what makes a file without suffix DICOM
# How each kind of file starts, so that random bytes get past the first check of a decoder now and then
MAGIC = {
    ".png": [b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"],
    ".jpg": [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xc0\0\x0b\x08"],
    ".bmp": [b"BM", b"BM" + b"\0" * 12 + b"\x28\0\0\0"],
    ".tif": [b"II*\0\x08\0\0\0", b"MM\0*\0\0\0\x08"],
    ".dcm": [DICM, DICM + b"\x02\0\x10\0UI"],
    ".nii": [struct.pack("<i", 348), struct.pack("<i", 540)],
}
for alias, kind in ((".jpeg", ".jpg"), (".tiff", ".tif"), (".dicom", ".dcm"), (".dic", ".dcm"), (".nii.gz", ".nii")):
    MAGIC[alias] = MAGIC[kind]
MAGIC[""] = [b"\x02\0\x10\0UI"]  # after the preamble: the start of a transfer syntax element


@pytest.fixture(autouse=True)
def hang_guard():
    """Dump every thread's stack and exit if one test runs past HANG_LIMIT_S (hypothesis cannot stop C code)."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def record(outcome: str) -> None:
    """Count outcomes, to see how far the cases get into the decoders (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(outcome)


def assert_image_or_named_error(path: Path) -> np.ndarray | None:
    """The property: ``read_raw`` gives a 2D finite float32 array, or a CXRReadError whose message names ``path``.

    Any other exception propagates and fails the example.
    """
    try:
        arr = read_raw(path)
    except CXRReadError as e:
        assert e.path == str(path) and str(e).startswith(f"{path}: ") and e.reason, str(e)
        record(re.sub(r"[\d.]+", "N", e.reason)[:60])
        return None
    record("decoded")
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32, type(arr)
    assert arr.ndim == 2 and min(arr.shape) >= 2 and np.isfinite(arr).all(), arr.shape
    scaled = read_cxr(path)  # and its [0, 1] scaling survives whatever values the file holds
    assert scaled.shape == arr.shape and np.isfinite(scaled).all() and 0 <= scaled.min() <= scaled.max() <= 1
    return arr


# --- valid files of every kind, to be cut short or overwritten ---------------------------------------------------


def pil_templates(fmt: str) -> list[bytes]:
    """Small valid files of PIL format ``fmt``: grey and colour, 16-bit and palette, compressed or progressive."""
    picture = synthetic_cxr(20, 28, seed=5)[0]
    images = [Image.fromarray(picture), Image.fromarray(picture).convert("RGB")]
    options: list[dict] = [{}]
    if fmt == "PNG":
        images += [Image.fromarray(picture.astype(np.uint16) * 257), Image.fromarray(picture).convert("P")]
    if fmt == "TIFF":
        images.append(Image.fromarray(picture.astype(np.uint16) * 257))
        options.append({"compression": "tiff_lzw"})
    if fmt == "JPEG":
        options.append({"progressive": True})
    out = []
    for img in images:
        for opts in options:
            buf = io.BytesIO()
            img.save(buf, format=fmt, **opts)
            out.append(buf.getvalue())
    return out


def dicom_templates(folder: Path) -> list[bytes]:
    """Small valid DICOM files: 12-bit windowed, 8-bit MONOCHROME1 rescaled, JPEG baseline and RLE frames."""
    picture = synthetic_cxr(20, 28, seed=5)[0]
    write_dicom(folder / "a.dcm", picture.astype(np.uint16) * 16, bits=12, WindowCenter=2000, WindowWidth=3000)
    write_dicom(folder / "b.dcm", picture, "MONOCHROME1", 8, RescaleSlope=2, RescaleIntercept=-10)
    jpeg = io.BytesIO()
    Image.fromarray(picture).save(jpeg, format="JPEG")
    rle = encapsulate(rle_frame(picture))
    files = [(folder / n).read_bytes() for n in ("a.dcm", "b.dcm")]
    for syntax, data in ((JPEGBaseline8Bit, encapsulate(jpeg.getvalue())), (RLELossless, rle)):
        files.append(raw_dicom(syntax, dict(PIXEL_TAGS, BitsAllocated=8, BitsStored=8, HighBit=7), data))
    return files


def nifti_templates() -> list[bytes]:
    """Small valid NIfTI-1 and NIfTI-2 files of float, int16 (3D, one slice) and uint8 voxels."""
    picture = synthetic_cxr(20, 28, seed=5)[0].T
    out = []
    for img in (
        nib.Nifti1Image(picture.astype(np.float32), np.eye(4)),
        nib.Nifti1Image(picture.astype(np.int16)[..., None], np.diag([0.5, 0.5, 1, 1])),
        nib.Nifti2Image(picture.astype(np.uint8), np.eye(4)),
    ):
        out.append(img.to_bytes())
    return out


class Quiet(dict):
    """A dict of file contents that a failing example prints as its keys, not as megabytes of bytes."""

    def __repr__(self) -> str:
        return f"<files for {', '.join(map(repr, self))}>"


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Quiet:
    """suffix -> valid files of that kind; each is read once here, so that imports do not count against deadlines."""
    folder = tmp_path_factory.mktemp("templates")
    pil = {s: pil_templates(f) for s, f in ((".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".tif", "TIFF"))}
    dicom, nifti = dicom_templates(folder), nifti_templates()
    out = {**pil, ".jpeg": pil[".jpg"], ".tiff": pil[".tif"], ".nii": nifti}
    out.update({s: dicom for s in (".dcm", ".dicom", ".dic", "")})
    out[".nii.gz"] = [gzip.compress(d, mtime=0) for d in nifti]
    for suffix, files in out.items():
        for i, data in enumerate(files):
            path = folder / f"t{i}{suffix or '_nosuffix'}"
            path.write_bytes(data)
            assert assert_image_or_named_error(path) is not None, (suffix, i)
    return Quiet(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One folder for every case: each example overwrites the file of its suffix."""
    return tmp_path_factory.mktemp("fuzz")


def fuzz_path(folder: Path, suffix: str) -> Path:
    """Where a case with ``suffix`` ("" for a DICOM file without suffix) is written."""
    return folder / ("case" + suffix if suffix else "case_without_suffix")


# --- random bytes ---------------------------------------------------------------------------------------------------


def test_every_suffix_reaches_its_reader(workdir, templates):
    """A twin suffix picks its twin's reader (detect_format) and decodes its twin's files to the same array."""
    assert set(SUFFIXES) == set(READERS.values()) | set(TWINS)
    for twin, suffix in TWINS.items():
        assert detect_format(f"x{twin}") == detect_format(f"x{suffix}") and twin in SUPPORTED_SUFFIXES
        for i, content in enumerate(templates[suffix]):
            a, b = workdir / f"twin{i}{twin}", workdir / f"twin{i}{suffix}"
            a.write_bytes(content)
            b.write_bytes(content)
            assert np.array_equal(read_raw(a), read_raw(b)), (twin, i)


@pytest.mark.parametrize("suffix", list(READERS.values()), ids=list(READERS))
@settings(PROFILE)
@given(data=st.data())
def test_random_bytes(workdir, templates, suffix, data):
    body = data.draw(st.binary(max_size=2048), label="body")
    head = data.draw(st.sampled_from([b""] + MAGIC[suffix]), label="head")
    content = head + body
    if suffix == "":
        content = DICM + content
    if suffix == ".nii.gz" and data.draw(st.booleans(), label="gzipped"):
        content = gzip.compress(content, mtime=0)
    path = fuzz_path(workdir, suffix)
    path.write_bytes(content)
    assert_image_or_named_error(path)


# --- valid files cut short or with bytes overwritten ------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` cut at a random length, with random bytes overwritten, or both."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["cut", "overwrite", "both"]))
    if kind in ("overwrite", "both"):
        # mostly in the first 512 bytes, where every format keeps its header
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, min(len(data), 512) - 1) | st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
    if kind in ("cut", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@pytest.mark.parametrize("suffix", list(READERS.values()), ids=list(READERS))
@settings(PROFILE)
@given(data=st.data())
def test_damaged_valid_files(workdir, templates, suffix, data):
    original = data.draw(st.sampled_from(templates[suffix]), label="template")
    if suffix == ".nii.gz" and data.draw(st.booleans(), label="damage inside the gzip stream"):
        content = gzip.compress(data.draw(damaged(gzip.decompress(original)), label="nifti"), mtime=0)
    else:
        content = data.draw(damaged(original), label="content")
    path = fuzz_path(workdir, suffix)
    path.write_bytes(content)
    assert_image_or_named_error(path)


# --- DICOM files with random header values --------------------------------------------------------------------------

# Written byte by byte below: pydicom refuses to write most of the values drawn here (negative Rows, "abc" frames).
PIXEL_TAGS = {
    "Rows": 20,
    "Columns": 28,
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 16,
    "BitsStored": 12,
    "HighBit": 11,
    "PixelRepresentation": 0,
}
TAGS = {  # keyword: (tag, VR in the dictionary)
    "SOPClassUID": (0x00080016, "UI"),
    "Modality": (0x00080060, "CS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "PlanarConfiguration": (0x00280006, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "HighBit": (0x00280102, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "WindowCenter": (0x00281050, "DS"),
    "WindowWidth": (0x00281051, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleType": (0x00281054, "LO"),
    "VOILUTFunction": (0x00281056, "CS"),
    "VOILUTSequence": (0x00283010, "SQ"),
    "LUTDescriptor": (0x00283002, "US"),
    "LUTData": (0x00283006, "OW"),
    "PixelData": (0x7FE00010, "OW"),
}
LONG_VRS = {"OB", "OW", "OF", "SQ", "UN", "UT"}
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
UNDEFINED = 0xFFFFFFFF


def encode_element(keyword: str, value: Any, vr: str | None, syntax: str) -> bytes:
    """One data element in ``syntax``: ``value`` is a number, a list of numbers, text, bytes or (for SQ) a list of
    items, each a dict of keyword -> (value, vr)."""
    tag, dict_vr = TAGS[keyword]
    vr = vr or dict_vr
    big = syntax == ExplicitVRBigEndian
    end = ">" if big else "<"
    if vr == "SQ":
        items = b""
        for item in value:
            body = b"".join(encode_element(k, v, r, syntax) for k, (v, r) in sorted(item.items(), key=order))
            items += struct.pack(end + "HHI", 0xFFFE, 0xE000, len(body)) + body
        raw = items
    elif isinstance(value, bytes):
        raw = value
    elif vr in NUMBER_FORMATS:
        numbers = value if isinstance(value, list) else [value]
        raw = struct.pack(end + NUMBER_FORMATS[vr] * len(numbers), *numbers)
    else:
        raw = str(value).encode("latin-1", "replace")
    if len(raw) % 2:
        raw += b"\0" if vr in ("UI", "OB", "OW", "UN") else b" "
    length = UNDEFINED if keyword == "PixelData" and raw[:4] == b"\xfe\xff\x00\xe0" else len(raw)
    if length == UNDEFINED:  # encapsulated: items end with a sequence delimiter
        raw, vr = raw + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), "OB"
    head = struct.pack(end + "HH", tag >> 16, tag & 0xFFFF)
    if syntax == ImplicitVRLittleEndian:
        return head + struct.pack("<I", length) + raw
    if vr in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(end + "I", length) + raw
    return head + vr.encode() + struct.pack(end + "H", min(length, 0xFFFF)) + raw


def order(item: tuple[str, tuple]) -> int:
    """Sort key of (keyword, value) pairs: a data set lists its elements in tag order."""
    return TAGS[item[0]][0]


def raw_dicom(syntax: str, tags: dict, pixel_data: bytes | None) -> bytes:
    """A DICOM file (preamble, file meta, data set) with ``tags`` (keyword -> value or (value, VR)) as given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    buf.write(DICM)
    write_file_meta_info(buf, meta, enforce_standard=True)
    elements = {k: v if isinstance(v, tuple) else (v, None) for k, v in tags.items()}
    if pixel_data is not None:
        elements["PixelData"] = (pixel_data, None)
    body = b"".join(encode_element(k, v, vr, syntax) for k, (v, vr) in sorted(elements.items(), key=order))
    if syntax == DeflatedExplicitVRLittleEndian:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = deflate.compress(body) + deflate.flush()
    return buf.getvalue() + body


def rle_frame(pixels: np.ndarray) -> bytes:
    """DICOM RLE of an 8-bit single-sample frame: a 64-byte header and one segment of literal runs."""
    flat = pixels.astype(np.uint8).tobytes()
    segment = b"".join(bytes([len(run) - 1]) + run for run in (flat[i : i + 128] for i in range(0, len(flat), 128)))
    return struct.pack("<16I", 1, 64, *[0] * 14) + segment


def several(elements: st.SearchStrategy[int], least: int, most: int) -> st.SearchStrategy[list[int]]:
    """A list of ``least`` to ``most`` elements (``st.lists`` of integers overruns the example buffer often)."""
    return st.integers(least, most).flatmap(lambda n: st.tuples(*[elements] * n)).map(list)


def counts(top: int) -> st.SearchStrategy[int]:
    """Small counts mostly, and the edges: zero, one, the largest 16-bit value."""
    return st.integers(0, top) | st.sampled_from([0, 1, 2, 255, 256, 4096, 65535])


# A header value as the VR the dictionary gives, or as another VR: negative, fractional, text, several values.
def odd_number(vr: str, top: int) -> st.SearchStrategy:
    return st.one_of(
        counts(top).map(lambda v: (v, vr)),
        st.integers(-(2**15), 2**15 - 1).map(lambda v: (v, "SS")),
        st.integers(0, 2**32 - 1).map(lambda v: (v, "UL")),
        st.sampled_from(["-1", "0", "2", "1.5", "1e9", "abc", "", "nan"]).map(lambda v: (v, "IS")),
        several(counts(top), 2, 3).map(lambda v: (v, vr)),
    )


DECIMALS = st.one_of(
    st.floats(-5000, 5000).map(lambda f: f"{f:.6g}"),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda f: f"{f:.6g}"),
    st.sampled_from(["0", "-1", "1", "4095", "1e38", "-1e38", "1e308", "nan", "inf", "-inf", "x", "", "100\\200"]),
)
PHOTOMETRIC = st.sampled_from(
    ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "ARGB", "", "FOO"]
)
SYNTAXES = st.sampled_from(
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGBaseline8Bit,
        JPEG2000Lossless,
        "1.2.3.4.5.6",  # no transfer syntax pydicom knows
    ]
)


@st.composite
def dicom_files(draw: st.DrawFn, jpeg: bytes, j2k: bytes) -> bytes:
    """A DICOM file in a random transfer syntax whose pixel-describing header values are mostly valid, some random
    or missing, with pixel data that matches the header, random bytes, or a real compressed frame."""
    syntax = draw(SYNTAXES, label="syntax")
    tags: dict = {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1", "Modality": "DX"}
    bits = 8 if syntax in (RLELossless, JPEGBaseline8Bit, JPEG2000Lossless) else 16  # the frames below are 8-bit
    numbers = {
        "Rows": (odd_number("US", 40), 20),
        "Columns": (odd_number("US", 40), 28),
        "SamplesPerPixel": (st.sampled_from([0, 1, 2, 3, 4, 5, 65535]), 1),
        "PlanarConfiguration": (st.sampled_from([0, 1, 2]), 0),
        "NumberOfFrames": (st.sampled_from(["0", "1", "2", "-1", "", "abc", "1e3", "999999999"]), "1"),
        "BitsAllocated": (st.sampled_from([0, 1, 8, 12, 16, 32, 64, 65535]), bits),
        "BitsStored": (st.sampled_from([0, 1, 7, 8, 12, 16, 17, 32, 64]), bits),
        "HighBit": (st.sampled_from([0, 6, 7, 11, 15, 16, 31, 63]), bits - 1),
        "PixelRepresentation": (st.sampled_from([0, 1, 2]), 0),
    }
    for keyword, (strategy, usual) in numbers.items():
        # each header value is left as in a valid file, drawn at random, or missing
        choice = draw(st.sampled_from(["usual"] * 10 + ["random"] * 3 + ["missing"]), label=keyword)
        if choice != "missing":
            tags[keyword] = usual if choice == "usual" else draw(strategy, label=keyword)
    tags["PhotometricInterpretation"] = draw(st.just("MONOCHROME2") | PHOTOMETRIC, label="photometric")
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
        if draw(st.booleans(), label=f"has {keyword}"):
            tags[keyword] = draw(DECIMALS, label=keyword)
    if draw(st.booleans(), label="has function"):
        tags["VOILUTFunction"] = draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "X"]))
    if draw(st.integers(0, 3), label="has VOI LUT") == 0:
        descriptor = draw(several(st.integers(0, 65535), 1, 4), label="LUT descriptor")
        table = draw(st.binary(max_size=256), label="LUT data")
        tags["VOILUTSequence"] = [{"LUTDescriptor": (descriptor, None), "LUTData": (table, None)}]
    # pixel data: as long as the header asks for (when small), random in length, missing, or a real compressed frame
    kind = draw(st.sampled_from(["declared"] * 4 + ["random", "missing", "frame", "frame"]), label="pixel data")
    if kind == "missing":
        pixel_data = None
    elif kind == "frame":
        frame = {JPEGBaseline8Bit: jpeg, JPEG2000Lossless: j2k}.get(syntax) or rle_frame(np.arange(560) % 256)
        pixel_data = encapsulate(frame)
    else:
        if kind == "declared":
            size = 1
            for keyword in ("Rows", "Columns", "SamplesPerPixel"):
                value = tags.get(keyword, 1)
                value = value[0] if isinstance(value, tuple) else value
                size *= value if isinstance(value, int) else 1
            allocated = tags.get("BitsAllocated", 16)
            allocated = allocated if isinstance(allocated, int) else 16
            size = min(max(size * max(allocated, 8) // 8, 0), 1 << 16)
        else:
            size = draw(st.integers(0, 4096), label="pixel bytes")
        seed = draw(st.integers(0, 2**32 - 1), label="pixel seed")
        pixel_data = np.random.default_rng(seed).bytes(size)
        if syntax in (RLELossless, JPEGBaseline8Bit, JPEG2000Lossless) and draw(st.booleans(), label="encapsulate"):
            pixel_data = encapsulate(pixel_data)
    return raw_dicom(syntax, tags, pixel_data)


@pytest.fixture(scope="module")
def frames() -> Quiet:
    """Compressed frames (JPEG baseline, JPEG 2000 codestream) to put into DICOM pixel data."""
    picture = synthetic_cxr(20, 28, seed=5)[0]
    jpeg, j2k = io.BytesIO(), io.BytesIO()
    Image.fromarray(picture).save(jpeg, format="JPEG")
    Image.fromarray(picture).save(j2k, format="JPEG2000", no_jp2=True, irreversible=False)
    return Quiet(jpeg=jpeg.getvalue(), j2k=j2k.getvalue())


@settings(PROFILE, max_examples=PROFILE.max_examples * 16)
@given(data=st.data())
def test_dicom_random_header_values(workdir, templates, frames, data):
    content = data.draw(dicom_files(frames["jpeg"], frames["j2k"]), label="file")
    suffix = data.draw(st.sampled_from([".dcm", ""]), label="suffix")
    path = fuzz_path(workdir, suffix)
    path.write_bytes(content)
    assert_image_or_named_error(path)


def test_raw_dicom_writer_makes_readable_files(workdir):
    # the byte-level writer above is a valid DICOM writer for sane values, so the fuzzing reaches the decoders
    picture = synthetic_cxr(20, 28, seed=5)[0].astype(np.uint16)
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        path = workdir / "sane.dcm"
        path.write_bytes(raw_dicom(syntax, PIXEL_TAGS, picture.tobytes()))
        np.testing.assert_array_equal(read_raw(path), picture)
    rle = raw_dicom(
        RLELossless, dict(PIXEL_TAGS, BitsAllocated=8, BitsStored=8, HighBit=7), encapsulate(rle_frame(picture))
    )
    path.write_bytes(rle)
    np.testing.assert_array_equal(read_raw(path), picture)
