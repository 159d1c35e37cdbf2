"""ROS image messages ↔ numpy, without ROS.

Works on any object with the fields of ``sensor_msgs/Image`` (``height, width, encoding,
is_bigendian, step, data``) or ``sensor_msgs/CompressedImage`` (``format, data``): rclpy messages,
rosbags messages, dataclasses or ``SimpleNamespace``. ``data`` may be bytes, bytearray, memoryview,
``array.array('B')``, a numpy uint8 array or a list of ints.

Zero-copy rule: :func:`image_to_numpy` returns a view of ``data`` (``np.shares_memory`` holds),
also for padded rows (a strided view). It copies only when ``data`` is a list, a tuple or a
non-contiguous numpy array, or when ``is_bigendian`` differs from the host and the pixels have
more than one byte. A view of immutable ``bytes`` is read-only; a 16-bit image whose ``step`` is
odd gives an unaligned view (numpy handles it; :func:`image_to_rgb` copies it for OpenCV).

``ENCODINGS`` is the single table of supported encodings.
"""

from __future__ import annotations

import array as _array
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ros_mm_perception.core.config import DEFAULT_MAX_IMAGE_PIXELS
from ros_mm_perception.core.errors import ImageFormatError

_HOST_BIG_ENDIAN = sys.byteorder == "big"


class ImageTooLarge(ImageFormatError):
    """An image with more pixels than the limit (``max_image_pixels``); refused before decoding."""


def check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """:class:`ImageTooLarge` when ``width x height`` is above ``max_pixels``."""
    if int(width) * int(height) > max_pixels:
        raise ImageTooLarge(f"{what} is {width} x {height} pixels, more than max_image_pixels "
                            f"({max_pixels}); refused without decoding it")


def encoded_size(data) -> Optional[Tuple[int, int]]:
    """(width, height) from the header of an encoded image (PNG, JPEG, BMP, WebP, TIFF, PNM), or
    None when the header is not one of those or is cut short; nothing is decoded."""
    head = bytes(memoryview(_byte_array(data))[:65536])
    for parse in (_png_size, _jpeg_size, _bmp_size, _webp_size, _tiff_size, _pnm_size):
        try:
            size = parse(head)
        except (IndexError, ValueError, struct.error):
            size = None
        if size is not None:
            return size
    return None


def _png_size(b: bytes):
    if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
        return struct.unpack(">II", b[16:24])
    return None


def _jpeg_size(b: bytes):
    if b[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", b[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _bmp_size(b: bytes):
    if b[:2] == b"BM" and len(b) >= 26:
        width, height = struct.unpack("<ii", b[18:26])
        return abs(width), abs(height)
    return None


def _webp_size(b: bytes):
    if b[:4] != b"RIFF" or b[8:12] != b"WEBP":
        return None
    chunk = b[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", b[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(b: bytes):
    order = {b"II": "<", b"MM": ">"}.get(b[:2])
    if order is None or struct.unpack(order + "H", b[2:4])[0] != 42:
        return None
    ifd = struct.unpack(order + "I", b[4:8])[0]
    count = struct.unpack(order + "H", b[ifd:ifd + 2])[0]
    size = {}
    for k in range(count):
        entry = b[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            short = kind == 3
            size[tag] = struct.unpack(order + ("H" if short else "I"),
                                      entry[8:10 if short else 12])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(b: bytes):
    if len(b) < 2 or b[0:1] != b"P" or b[1:2] not in b"123456":
        return None
    words = []
    for line in b[2:4096].split(b"\n"):
        words.extend(line.split(b"#", 1)[0].split())
        if len(words) >= 2:
            return int(words[0]), int(words[1])
    return None


@dataclass(frozen=True)
class Encoding:
    """Memory layout of one ``sensor_msgs/Image`` encoding.

    ``to_rgb`` names the OpenCV ``cvtColor`` code that turns the (8-bit) pixels into RGB:
    ``""`` means they already are RGB, ``None`` means the encoding has no colour meaning.
    """

    name: str
    channels: int
    dtype: np.dtype
    to_rgb: Optional[str]

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.dtype.itemsize


def _encoding_table() -> Dict[str, Encoding]:
    u8, u16 = np.dtype(np.uint8), np.dtype(np.uint16)
    named = [
        ("rgb8", 3, u8, ""), ("bgr8", 3, u8, "COLOR_BGR2RGB"),
        ("rgba8", 4, u8, "COLOR_RGBA2RGB"), ("bgra8", 4, u8, "COLOR_BGRA2RGB"),
        ("rgb16", 3, u16, ""), ("bgr16", 3, u16, "COLOR_BGR2RGB"),
        ("rgba16", 4, u16, "COLOR_RGBA2RGB"), ("bgra16", 4, u16, "COLOR_BGRA2RGB"),
        ("mono8", 1, u8, "COLOR_GRAY2RGB"), ("mono16", 1, u16, "COLOR_GRAY2RGB"),
        # OpenCV names a Bayer pattern by its pixels at row 1, columns 1-2: RGGB is "BayerBG" (as
        # in cv_bridge).
        ("bayer_rggb8", 1, u8, "COLOR_BayerBG2RGB"), ("bayer_bggr8", 1, u8, "COLOR_BayerRG2RGB"),
        ("bayer_gbrg8", 1, u8, "COLOR_BayerGR2RGB"), ("bayer_grbg8", 1, u8, "COLOR_BayerGB2RGB"),
        ("bayer_rggb16", 1, u16, "COLOR_BayerBG2RGB"),
        ("bayer_bggr16", 1, u16, "COLOR_BayerRG2RGB"),
        ("bayer_gbrg16", 1, u16, "COLOR_BayerGR2RGB"),
        ("bayer_grbg16", 1, u16, "COLOR_BayerGB2RGB"),
        # yuv422 is UYVY (U Y0 V Y1), yuv422_yuy2 is YUYV (Y0 U Y1 V); 2 bytes per pixel.
        ("yuv422", 2, u8, "COLOR_YUV2RGB_UYVY"), ("uyvy", 2, u8, "COLOR_YUV2RGB_UYVY"),
        ("yuv422_yuy2", 2, u8, "COLOR_YUV2RGB_YUY2"), ("yuyv", 2, u8, "COLOR_YUV2RGB_YUY2"),
    ]
    table = {name: Encoding(name, c, dt, rgb) for name, c, dt, rgb in named}
    grey = {"8UC1": "COLOR_GRAY2RGB", "16UC1": "COLOR_GRAY2RGB"}
    for prefix, dtype in (("8U", np.uint8), ("8S", np.int8), ("16U", np.uint16), ("16S", np.int16),
                          ("32S", np.int32), ("32F", np.float32), ("64F", np.float64)):
        for channels in range(1, 5):
            name = f"{prefix}C{channels}"
            table[name] = Encoding(name, channels, np.dtype(dtype), grey.get(name))
    return table


ENCODINGS: Dict[str, Encoding] = _encoding_table()
_YUV422 = frozenset(name for name, enc in ENCODINGS.items() if "YUV" in (enc.to_rgb or ""))
_DEPTH_SCALE = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}  # to metres
_DATA_AS = ("bytes", "array", "numpy")


def _supported() -> str:
    named = [name for name in ENCODINGS if not name[0].isdigit()]
    return ", ".join(named) + " and 8UC1..64FC4 (<8U|8S|16U|16S|32S|32F|64F>C<1-4>)"


def lookup_encoding(name: str) -> Encoding:
    """The table entry for an encoding name; :class:`ImageFormatError` if unsupported."""
    try:
        return ENCODINGS[name]
    except (KeyError, TypeError):
        raise ImageFormatError(
            f"unsupported image encoding {name!r}; supported: {_supported()}"
        ) from None


def _byte_array(data) -> np.ndarray:
    """``data`` as a flat uint8 array: a view for buffers, a copy for lists and tuples."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageFormatError(f"image data must be uint8, got a numpy array of {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (OverflowError, TypeError, ValueError) as exc:
            raise ImageFormatError(f"image data must be integers 0..255: {exc}") from None
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageFormatError(
            f"image data of type {type(data).__name__} is not bytes-like: {exc}"
        ) from None


def _check_size(enc: Encoding, height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"image size must be positive, got width {width} x height {height}")
    if enc.name in _YUV422 and width % 2:
        raise ImageFormatError(f"{enc.name} packs two pixels per 4 bytes: width must be even, "
                               f"got {width}")


def image_to_numpy(msg) -> np.ndarray:
    """``sensor_msgs/Image``-like → array in the encoding's own layout and dtype.

    HxW for one channel, HxWxC otherwise (yuv422 variants: HxWx2 uint8). A view of ``msg.data``
    where possible (see the module's zero-copy rule); always native byte order.
    """
    enc = lookup_encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(enc, height, width)
    row_bytes = width * enc.pixel_bytes
    if step < row_bytes:
        raise ImageFormatError(
            f"step {step} is smaller than one row of {width} {enc.name} pixels ({row_bytes} bytes)"
        )
    flat = _byte_array(msg.data)
    expected = step * height
    if flat.size < expected:
        raise ImageFormatError(
            f"image data truncated: expected {expected} bytes (step {step} x height {height}), "
            f"got {flat.size}")
    if flat.size > expected:
        raise ImageFormatError(
            f"image data has {flat.size} bytes but step {step} x height {height} = {expected}: "
            "height, width or step is inconsistent with the data")
    item = enc.dtype.itemsize
    shape, strides = (height, width), (step, enc.pixel_bytes)
    if enc.channels > 1:
        shape, strides = shape + (enc.channels,), strides + (item,)
    image = np.ndarray(shape, dtype=enc.dtype, buffer=flat, strides=strides)
    if item > 1 and bool(msg.is_bigendian) != _HOST_BIG_ENDIAN:
        image = image.byteswap()  # a copy with the values in host order
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """uint16 → uint8 over the full range: round(v * 255 / 65535) (never a tie for integers)."""
    import cv2

    return cv2.convertScaleAbs(image, alpha=255 / 65535)


def _colour_names() -> str:
    return ", ".join(name for name, enc in ENCODINGS.items() if enc.to_rgb is not None)


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image``-like → HxWx3 uint8 RGB (model input).

    BGR is reordered, alpha dropped, grey replicated, Bayer demosaiced and yuv422 converted with
    OpenCV. 16-bit encodings are scaled over their full range: ``round(v * 255 / 65535)``.
    rgb8 is returned as the (possibly read-only) view of the message data. An image whose
    ``width x height`` is above ``max_pixels`` is :class:`ImageTooLarge`, before any conversion.
    """
    check_pixels(int(msg.width), int(msg.height), max_pixels)
    enc = lookup_encoding(msg.encoding)
    if enc.to_rgb is None:
        hint = (
            " (a depth image: use depth_to_metres)"
            if enc.channels == 1 and enc.dtype.kind == "f"
            else ""
        )
        raise ImageFormatError(
            f"encoding {enc.name} is not a colour or grey image{hint}; image_to_rgb supports: "
            f"{_colour_names()}")
    image = image_to_numpy(msg)
    if not image.flags.aligned:  # a step that is not a multiple of 2 bytes: OpenCV misreads these
        image = np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        image = _to_8bit(image)
    if not enc.to_rgb:
        return image
    import cv2

    return cv2.cvtColor(image, getattr(cv2, enc.to_rgb))


def depth_to_metres(msg_or_array, encoding: Optional[str] = None,
                    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Depth image → HxW float32 metres; invalid pixels are NaN (always a new array).

    16UC1 and mono16 hold millimetres (0 = invalid); 32FC1 holds metres (non-finite or <= 0 =
    invalid). A message uses its own encoding (``encoding``, if given, must agree); an array uses
    ``encoding`` or, when omitted, 16UC1 for uint16 and 32FC1 for float32. A message above
    ``max_pixels`` is :class:`ImageTooLarge`.
    """
    is_array = isinstance(msg_or_array, np.ndarray)
    if not is_array:
        check_pixels(int(msg_or_array.width), int(msg_or_array.height), max_pixels, "depth image")
    if is_array and encoding is None:
        encoding = {np.dtype(np.uint16): "16UC1",
                    np.dtype(np.float32): "32FC1"}.get(msg_or_array.dtype)
        if encoding is None:
            raise ImageFormatError(f"cannot tell the depth units of a {msg_or_array.dtype} "
                                   "array: pass encoding=")
    if not is_array:
        if encoding is not None and encoding != msg_or_array.encoding:
            raise ImageFormatError(f"encoding {encoding!r} disagrees with the message's "
                                   f"{msg_or_array.encoding!r}")
        encoding = msg_or_array.encoding
    if encoding not in _DEPTH_SCALE:
        raise ImageFormatError(
            f"encoding {encoding!r} is not a depth image; supported: 16UC1 and mono16 "
            "(millimetres), 32FC1 (metres)")
    depth = msg_or_array if is_array else image_to_numpy(msg_or_array)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.dtype != ENCODINGS[encoding].dtype or depth.ndim != 2:
        raise ImageFormatError(
            f"{encoding} depth must be an HxW {ENCODINGS[encoding].dtype} array, got "
            f"{depth.shape} {depth.dtype}")
    metres = depth.astype(np.float32) * np.float32(_DEPTH_SCALE[encoding])
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def _data_as(raw: np.ndarray, data_as: str):
    if data_as == "bytes":
        return raw.tobytes()
    if data_as == "array":
        out = _array.array("B")
        out.frombytes(raw.reshape(-1).view(np.uint8))
        return out
    return raw.reshape(-1).view(np.uint8).copy()


def numpy_to_image(array, encoding: str, *, header: Any = None,
                   msg_factory: Optional[Callable[..., Any]] = None, data_as: str = "bytes"):
    """Array → ``sensor_msgs/Image`` fields, the reverse of :func:`image_to_numpy`.

    Returns ``{height, width, encoding, is_bigendian, step, data}`` (plus ``header`` when given),
    or ``msg_factory(**fields)``, e.g. ``msg_factory=sensor_msgs.msg.Image, header=msg.header``.
    Rows are unpadded, in host byte order; ``data`` is a copy. ``data_as`` picks its type:
    ``"bytes"``, ``"array"`` (``array.array('B')``: rclpy stores this without a per-byte check)
    or ``"numpy"`` (uint8 array, as rosbags messages hold).
    """
    enc = lookup_encoding(encoding)
    if data_as not in _DATA_AS:
        raise ValueError(f"data_as must be one of {_DATA_AS}, got {data_as!r}")
    array = np.asarray(array)
    if array.dtype.kind != enc.dtype.kind or array.dtype.itemsize != enc.dtype.itemsize:
        raise ImageFormatError(f"encoding {enc.name} needs {enc.dtype} pixels, got {array.dtype}")
    if enc.channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    want = "HxW" if enc.channels == 1 else f"HxWx{enc.channels}"
    if array.ndim != (2 if enc.channels == 1 else 3) or (
        enc.channels > 1 and array.shape[2] != enc.channels
    ):
        raise ImageFormatError(
            f"encoding {enc.name} needs a {want} array, got shape {array.shape}"
        )
    height, width = array.shape[:2]
    _check_size(enc, height, width)
    raw = np.ascontiguousarray(array, dtype=enc.dtype)  # host byte order
    fields = dict(height=height, width=width, encoding=enc.name,
                  is_bigendian=int(_HOST_BIG_ENDIAN), step=width * enc.pixel_bytes,
                  data=_data_as(raw, data_as))
    if header is not None:
        fields["header"] = header
    return msg_factory(**fields) if msg_factory is not None else fields


def _decodes_to_bgr(fmt: str) -> bool:
    """Whether OpenCV's decode of a CompressedImage with this ``format`` gives BGR channels."""
    fmt = (fmt or "").strip()
    if "compresseddepth" in fmt.lower():
        raise ImageFormatError(
            f"compressed depth images ({fmt!r}) are not supported; subscribe to the raw depth "
            "topic or republish it with image_transport's raw transport")
    _, sep, codec = fmt.partition(";")
    if not sep:  # plain "jpeg"/"png": OpenCV's own BGR channel order
        return True
    # compressed_image_transport: "<encoding>; <codec> compressed <encoding fed to the encoder>"
    fed = codec.split("compressed", 1)[1].strip() if "compressed" in codec else ""
    return not fed.startswith("rgb")


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage``-like (JPEG, PNG, ...) → HxWx3 uint8 RGB.

    ``format`` may be plain ("jpeg", "png") or compressed_image_transport's
    "rgb8; jpeg compressed bgr8". compressedDepth is refused with :class:`ImageFormatError`; an
    image above ``max_pixels`` (read from its header) with :class:`ImageTooLarge`, undecoded.
    """
    import cv2

    bgr = _decodes_to_bgr(msg.format)
    data = _byte_array(msg.data)
    size = encoded_size(data)
    if size is not None:
        check_pixels(*size, max_pixels, f"compressed image ({msg.format!r})")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageFormatError(f"cannot decode compressed image (format {msg.format!r}, "
                               f"{data.size} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


def rgb_to_compressed(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> Tuple[str,
                                                                                        bytes]:
    """HxWx3 uint8 RGB → (``format`` string, encoded bytes) for a CompressedImage.

    ``fmt`` is "jpeg" or "png"; ``quality`` (1–100) applies to JPEG only. The format string is
    compressed_image_transport's ("rgb8; jpeg compressed bgr8"), which its decoder understands.
    """
    import cv2

    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise ImageFormatError("expected an HxWx3 uint8 RGB image, got "
                               f"{getattr(image, 'shape', type(image))}")
    if fmt not in ("jpeg", "png"):
        raise ImageFormatError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    if not 1 <= int(quality) <= 100:
        raise ImageFormatError(f"JPEG quality must be in 1..100, got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + fmt, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageFormatError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", encoded.tobytes()
