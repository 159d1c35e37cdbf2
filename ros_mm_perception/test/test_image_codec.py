"""ROS image message ↔ numpy conversions on message stand-ins (no ROS needed)."""

import array
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.imaging.image_codec import (
    ENCODINGS,
    compressed_to_rgb,
    depth_to_metres,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)

HOST_BIG = sys.byteorder == "big"


@dataclass
class ImageMsg:
    """Stand-in with sensor_msgs/Image's field names."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: object


def random_pixels(rng, encoding, height=3, width=4):
    enc = ENCODINGS[encoding]
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    if enc.dtype.kind == "f":
        return rng.standard_normal(shape).astype(enc.dtype) * 100
    info = np.iinfo(enc.dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=enc.dtype)


def padded(fields, extra=5):
    """The same image with ``extra`` junk bytes after each row."""
    rows = np.frombuffer(fields["data"], np.uint8).reshape(fields["height"], fields["step"])
    junk = np.full((fields["height"], extra), 0xAB, np.uint8)
    return dict(fields, step=fields["step"] + extra, data=np.hstack([rows, junk]).tobytes())


def other_byte_order(fields, encoding):
    """The same image stored in the byte order opposite to the host's."""
    enc = ENCODINGS[encoding]
    values = np.frombuffer(fields["data"], enc.dtype)
    swapped = values.astype(enc.dtype.newbyteorder("S")).tobytes()
    return dict(fields, data=swapped, is_bigendian=int(not HOST_BIG))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("layout",
                         ["plain", "padded", "other_byte_order", "padded_other_byte_order"])
def test_round_trip_every_encoding(encoding, layout, rng):
    pixels = random_pixels(rng, encoding)
    fields = numpy_to_image(pixels, encoding)
    enc = ENCODINGS[encoding]
    assert fields["step"] == pixels.shape[1] * enc.channels * enc.dtype.itemsize
    assert fields["is_bigendian"] == int(HOST_BIG) and isinstance(fields["data"], bytes)
    if "other_byte_order" in layout:
        fields = other_byte_order(fields, encoding)
    if "padded" in layout:
        fields = padded(fields)
    out = image_to_numpy(SimpleNamespace(**fields))
    assert out.dtype == enc.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


def test_byte_order_is_actually_swapped():
    fields = numpy_to_image(np.array([[0x0102]], np.uint16), "16UC1")
    fields = dict(fields, data=b"\x01\x02", is_bigendian=1)
    assert image_to_numpy(SimpleNamespace(**fields))[0, 0] == 0x0102
    fields["is_bigendian"] = 0
    assert image_to_numpy(SimpleNamespace(**fields))[0, 0] == 0x0201


def test_layout_shapes(rng):
    shapes = {"rgb8": (3, 4, 3), "bgra8": (3, 4, 4), "mono8": (3, 4), "mono16": (3, 4),
              "16UC1": (3, 4), "32FC1": (3, 4), "yuv422": (3, 4, 2), "yuv422_yuy2": (3, 4, 2),
              "uyvy": (3, 4, 2), "yuyv": (3, 4, 2)}
    for encoding, shape in shapes.items():
        out = image_to_numpy(SimpleNamespace(**numpy_to_image(random_pixels(rng, encoding),
                                                              encoding)))
        assert out.shape == shape, encoding


def test_zero_copy_for_buffers_including_padded_rows(rng):
    pixels = random_pixels(rng, "rgb8")
    fields = padded(numpy_to_image(pixels, "rgb8"))
    buffer = bytearray(fields["data"])
    backing = np.frombuffer(buffer, np.uint8)
    for data in (buffer, memoryview(buffer), backing):
        out = image_to_numpy(SimpleNamespace(**dict(fields, data=data)))
        assert np.shares_memory(out, backing)
        np.testing.assert_array_equal(out, pixels)
    # a change to the message buffer shows in the view (row 1, pixel 0, G)
    buffer[fields["step"] + 1] = 99
    assert out[1, 0, 1] == 99


def test_zero_copy_for_array_array_and_copy_for_foreign_byte_order(rng):
    pixels = random_pixels(rng, "16UC1")
    fields = numpy_to_image(pixels, "16UC1", data_as="array")
    assert isinstance(fields["data"], array.array) and fields["data"].typecode == "B"
    out = image_to_numpy(SimpleNamespace(**fields))
    assert np.shares_memory(out, np.frombuffer(fields["data"], np.uint8))
    swapped = other_byte_order(dict(fields, data=fields["data"].tobytes()), "16UC1")
    out = image_to_numpy(SimpleNamespace(**swapped))
    assert not np.shares_memory(out, np.frombuffer(swapped["data"], np.uint8))
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "array", "list", "numpy"])
def test_data_types(kind, rng):
    pixels = random_pixels(rng, "bgr8")
    raw = numpy_to_image(pixels, "bgr8")["data"]
    data = {"bytes": raw, "bytearray": bytearray(raw), "array": array.array("B", raw),
            "list": list(raw), "numpy": np.frombuffer(raw, np.uint8).copy()}[kind]
    msg = ImageMsg(height=3, width=4, encoding="bgr8", is_bigendian=0, step=12, data=data)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_numpy_to_image_data_as_and_header(rng):
    pixels = random_pixels(rng, "mono16")
    as_numpy = numpy_to_image(pixels, "mono16", data_as="numpy", header="hdr")
    assert as_numpy["header"] == "hdr"
    assert as_numpy["data"].dtype == np.uint8 and as_numpy["data"].flags.writeable
    assert not np.shares_memory(as_numpy["data"], pixels)
    assert "header" not in numpy_to_image(pixels, "mono16")
    made = numpy_to_image(pixels, "mono16", msg_factory=SimpleNamespace, header="hdr")
    assert made.header == "hdr" and made.encoding == "mono16" and made.step == 8
    np.testing.assert_array_equal(image_to_numpy(made), pixels)
    with pytest.raises(ValueError, match="data_as"):
        numpy_to_image(pixels, "mono16", data_as="list")


def test_numpy_to_image_accepts_strided_and_single_channel_3d(rng):
    pixels = random_pixels(rng, "rgb8", 6, 8)
    view = pixels[::2, ::2]
    np.testing.assert_array_equal(image_to_numpy(SimpleNamespace(**numpy_to_image(view, "rgb8"))),
                                  view)
    grey = random_pixels(rng, "mono8")
    fields = numpy_to_image(grey[..., None], "mono8")
    np.testing.assert_array_equal(image_to_numpy(SimpleNamespace(**fields)), grey)


# --- colour conversions ------------------------------------------------------------------------

def msg_of(pixels, encoding):
    return SimpleNamespace(**numpy_to_image(pixels, encoding))


def test_bgr_and_alpha_to_rgb():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[:] = (10, 20, 30)
    rgb = image_to_rgb(msg_of(bgr, "bgr8"))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == (30, 20, 10)
    assert tuple(
        image_to_rgb(msg_of(np.full((2, 2, 4), (10, 20, 30, 40), np.uint8), "bgra8"))[0, 0]
    ) == (30, 20, 10)
    assert tuple(
        image_to_rgb(msg_of(np.full((2, 2, 4), (10, 20, 30, 40), np.uint8), "rgba8"))[0, 0]
    ) == (10, 20, 30)
    assert tuple(image_to_rgb(msg_of(np.full((2, 2, 3), (1, 2, 3), np.uint8), "rgb8"))[0, 0]) == (
        1,
        2,
        3,
    )


def test_rgb8_is_returned_without_copy(rng):
    pixels = random_pixels(rng, "rgb8")
    backing = np.frombuffer(bytearray(pixels.tobytes()), np.uint8)
    msg = SimpleNamespace(**dict(numpy_to_image(pixels, "rgb8"), data=backing))
    assert np.shares_memory(image_to_rgb(msg), backing)


def test_padded_bgr_to_rgb(rng):
    pixels = random_pixels(rng, "bgr8", 5, 7)
    msg = SimpleNamespace(**padded(numpy_to_image(pixels, "bgr8"), extra=3))
    np.testing.assert_array_equal(image_to_rgb(msg), pixels[..., ::-1])


@pytest.mark.parametrize("encoding", ["mono16", "rgba16", "bgr16", "bayer_rggb16"])
@pytest.mark.parametrize("extra", [1, 2])
def test_padded_16_bit_to_rgb(encoding, extra, rng):
    pixels = random_pixels(rng, encoding, 6, 6)
    fields = numpy_to_image(pixels, encoding)
    expected = image_to_rgb(SimpleNamespace(**fields))
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**padded(fields, extra))), expected)


def test_mono_is_replicated_and_16_bit_scaled():
    mono = np.array([[0, 7, 255]], np.uint8)
    rgb = image_to_rgb(msg_of(mono, "mono8"))
    np.testing.assert_array_equal(rgb, np.repeat(mono[..., None], 3, axis=2))
    np.testing.assert_array_equal(image_to_rgb(msg_of(mono, "8UC1")), rgb)
    wide = np.array([[0, 257, 257 * 100, 65535, 128, 129]], np.uint16)  # v * 255 / 65535, rounded
    for encoding in ("mono16", "16UC1"):
        np.testing.assert_array_equal(image_to_rgb(msg_of(wide, encoding))[0, :, 1],
                                      [0, 1, 100, 255, 0, 1])
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(every.astype(np.float64) * 255 / 65535)
    np.testing.assert_array_equal(image_to_rgb(msg_of(every, "mono16"))[..., 0], expected)
    bgr16 = np.full((1, 2, 3), (0, 257 * 20, 65535), np.uint16)
    assert tuple(image_to_rgb(msg_of(bgr16, "bgr16"))[0, 0]) == (255, 20, 0)


def bt601_limited(y, u, v):
    """Reference YUV → RGB (ITU-R BT.601, limited range), independent of OpenCV."""
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    return np.clip([c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d], 0, 255)


@pytest.mark.parametrize("encoding,order", [("yuv422", "UYVY"), ("uyvy", "UYVY"),
                                            ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
def test_yuv422_constant_colour(encoding, order):
    y, u, v = 128, 64, 200
    quad = {"UYVY": [u, y, v, y], "YUYV": [y, u, y, v]}[order]
    data = bytes(quad * 2 * 3)  # 4 pixels wide, 3 rows
    msg = ImageMsg(height=3, width=4, encoding=encoding, is_bigendian=0, step=8, data=data)
    rgb = image_to_rgb(msg)
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3), np.tile(bt601_limited(y, u, v), (12, 1)),
                               atol=2)


def test_uyvy_and_yuyv_agree_on_varying_pixels(rng):
    y = rng.integers(16, 236, size=(4, 6), dtype=np.uint8)
    uv = rng.integers(16, 241, size=(4, 6), dtype=np.uint8)  # U, V alternating per pixel pair
    uyvy = np.stack([uv, y], axis=2)
    yuyv = np.stack([y, uv], axis=2)
    np.testing.assert_array_equal(image_to_rgb(msg_of(uyvy, "yuv422")),
                                  image_to_rgb(msg_of(yuyv, "yuv422_yuy2")))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_constant_colour(pattern, bits):
    colour = {"r": 200, "g": 100, "b": 30}
    mosaic = np.zeros((8, 8), np.uint16 if bits == 16 else np.uint8)
    for index, channel in enumerate(pattern):
        mosaic[index // 2::2, index % 2::2] = colour[channel] * (257 if bits == 16 else 1)
    rgb = image_to_rgb(msg_of(mosaic, f"bayer_{pattern}{bits}"))
    np.testing.assert_array_equal(rgb[2:6, 2:6].reshape(-1, 3), np.tile([200, 100, 30], (16, 1)))


def test_depth_is_not_colour():
    with pytest.raises(ImageFormatError, match="32FC1.*depth_to_metres"):
        image_to_rgb(msg_of(np.ones((2, 2), np.float32), "32FC1"))
    with pytest.raises(ImageFormatError, match="8UC3 is not a colour"):
        image_to_rgb(msg_of(np.ones((2, 2, 3), np.uint8), "8UC3"))


# --- depth -------------------------------------------------------------------------------------

def test_depth_millimetres_to_metres():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    for encoding in ("16UC1", "mono16"):
        metres = depth_to_metres(msg_of(mm, encoding))
        assert metres.dtype == np.float32 and metres.shape == (2, 2)
        assert np.isnan(metres[0, 0])
        np.testing.assert_allclose(metres[[0, 1, 1], [1, 0, 1]], [1.0, 1.5, 65.535], rtol=1e-6)
    np.testing.assert_array_equal(depth_to_metres(mm), depth_to_metres(msg_of(mm, "16UC1")))


def test_depth_float_metres_marks_invalid():
    m = np.array([[1.25, 0.0, -1.0], [np.nan, np.inf, 3.5]], np.float32)
    for source in (msg_of(m, "32FC1"), m):
        metres = depth_to_metres(source)
        np.testing.assert_array_equal(np.isnan(metres), [[False, True, True], [True, True, False]])
        assert metres[0, 0] == np.float32(1.25) and metres[1, 2] == np.float32(3.5)
    assert not np.isnan(m[0, 1])  # the input is left untouched


def test_depth_errors():
    with pytest.raises(ImageFormatError, match="not a depth image.*16UC1"):
        depth_to_metres(msg_of(np.ones((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ImageFormatError, match="pass encoding"):
        depth_to_metres(np.ones((2, 2), np.int32))
    with pytest.raises(ImageFormatError, match="uint16"):
        depth_to_metres(np.ones((2, 2), np.float32), encoding="16UC1")
    with pytest.raises(ImageFormatError, match="disagrees"):
        depth_to_metres(msg_of(np.ones((2, 2), np.uint16), "16UC1"), encoding="32FC1")


# --- errors ------------------------------------------------------------------------------------

def good_fields():
    return numpy_to_image(np.zeros((3, 4, 3), np.uint8), "rgb8")


@pytest.mark.parametrize("change,pattern", [
    (dict(encoding="rgb9"), r"unsupported image encoding 'rgb9'.*rgb8, bgr8.*8UC1"),
    (dict(data=bytes(35)), r"truncated: expected 36 bytes.*got 35"),
    (dict(data=bytes(40)), r"40 bytes but step 12 x height 3 = 36.*inconsistent"),
    (dict(step=11), r"step 11 is smaller than one row of 4 rgb8 pixels \(12 bytes\)"),
    (dict(height=0, data=b""), r"size must be positive.*height 0"),
    (dict(width=-2), r"size must be positive.*width -2"),
    (dict(height=4), r"truncated: expected 48 bytes"),
    (dict(data=[1, 300] * 18), r"0\.\.255"),
    (dict(data=np.zeros(36, np.uint16)), r"must be uint8"),
    (dict(data=3.5), r"not bytes-like"),
])
def test_bad_messages_raise_image_format_error(change, pattern):
    msg = SimpleNamespace(**dict(good_fields(), **change))
    with pytest.raises(ImageFormatError, match=pattern):
        image_to_numpy(msg)


def test_odd_width_yuv422_is_rejected():
    with pytest.raises(ImageFormatError, match="width must be even, got 3"):
        image_to_numpy(ImageMsg(height=1, width=3, encoding="yuv422", is_bigendian=0, step=6,
                                data=bytes(6)))
    with pytest.raises(ImageFormatError, match="width must be even"):
        numpy_to_image(np.zeros((1, 3, 2), np.uint8), "yuyv")


@pytest.mark.parametrize("array,encoding,pattern", [
    (np.zeros((2, 2, 3), np.float32), "rgb8", r"rgb8 needs uint8 pixels, got float32"),
    (np.zeros((2, 2), np.uint8), "rgb8", r"needs a HxWx3 array, got shape \(2, 2\)"),
    (np.zeros((2, 2, 4), np.uint8), "rgb8", r"HxWx3 array, got shape \(2, 2, 4\)"),
    (np.zeros((2, 2, 3), np.uint16), "mono16", r"HxW array"),
    (np.zeros((0, 2, 3), np.uint8), "rgb8", r"size must be positive"),
    (np.zeros((2, 2), np.uint8), "jpeg", r"unsupported image encoding 'jpeg'"),
])
def test_numpy_to_image_validates(array, encoding, pattern):
    with pytest.raises(ImageFormatError, match=pattern):
        numpy_to_image(array, encoding)


def test_image_format_error_is_a_user_error():
    from ros_mm_perception.core.errors import UserError

    assert issubclass(ImageFormatError, UserError)


# --- compressed images -------------------------------------------------------------------------

def test_png_round_trip_is_exact(rng):
    image = random_pixels(rng, "rgb8", 9, 11)
    fmt, data = rgb_to_compressed(image, "png")
    assert fmt == "rgb8; png compressed bgr8" and data[:4] == b"\x89PNG"
    for as_data in (data, array.array("B", data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(compressed_to_rgb(SimpleNamespace(format=fmt, data=as_data)),
                                      image)


def test_jpeg_keeps_a_constant_colour():
    image = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    fmt, data = rgb_to_compressed(image, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8" and data[:2] == b"\xff\xd8"
    for form in (fmt, "jpeg", "bgr8; jpeg compressed bgr8"):
        decoded = compressed_to_rgb(SimpleNamespace(format=form, data=data))
        np.testing.assert_allclose(decoded.astype(int), image.astype(int), atol=4)


def test_jpeg_quality_changes_size(rng):
    image = random_pixels(rng, "rgb8", 32, 32)
    assert len(rgb_to_compressed(image, quality=10)[1]) < len(rgb_to_compressed(image,
                                                                                quality=95)[1])


def test_compressed_channel_order_from_format():
    image = np.full((4, 4, 3), (200, 40, 90), np.uint8)
    ok, png = cv2.imencode(".png", image)  # the channels as given: R in OpenCV's B slot
    plain = compressed_to_rgb(SimpleNamespace(format="png", data=png.tobytes()))
    assert tuple(plain[0, 0]) == (90, 40, 200)  # plain formats hold OpenCV's BGR order
    fed_rgb = compressed_to_rgb(SimpleNamespace(format="rgb8; png compressed rgb8",
                                                data=png.tobytes()))
    assert tuple(fed_rgb[0, 0]) == (200, 40, 90)


def test_compressed_grey_is_replicated():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    ok, png = cv2.imencode(".png", grey)
    rgb = compressed_to_rgb(SimpleNamespace(format="mono8; png compressed mono8",
                                            data=png.tobytes()))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt,data,pattern", [
    ("jpeg", b"not an image at all",
     r"cannot decode compressed image \(format 'jpeg', 19 bytes\)"),
    ("png", b"", r"0 bytes"),
    ("16UC1; compressedDepth png", b"\x00" * 20, r"compressed depth images .* not supported"),
])
def test_bad_compressed_raises(fmt, data, pattern):
    with pytest.raises(ImageFormatError, match=pattern):
        compressed_to_rgb(SimpleNamespace(format=fmt, data=data))


def test_rgb_to_compressed_validates():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ImageFormatError, match="'jpeg' or 'png'"):
        rgb_to_compressed(image, "bmp")
    with pytest.raises(ImageFormatError, match="quality must be in 1..100"):
        rgb_to_compressed(image, quality=0)
    with pytest.raises(ImageFormatError, match="HxWx3 uint8"):
        rgb_to_compressed(np.zeros((4, 4), np.uint8))


# --- real message classes (rosbags' typestore, no ROS install) --------------------------------

@pytest.fixture(scope="module")
def typestore():
    typesys = pytest.importorskip("rosbags.typesys")
    return typesys.get_typestore(typesys.Stores.ROS2_JAZZY)


def make_header(typestore):
    time = typestore.types["builtin_interfaces/msg/Time"](sec=12, nanosec=34)
    return typestore.types["std_msgs/msg/Header"](stamp=time, frame_id="camera_optical")


@pytest.mark.parametrize("encoding", ["bgr8", "16UC1", "32FC1", "yuv422"])
def test_rosbags_image_both_directions(typestore, encoding, rng):
    image_type = typestore.types["sensor_msgs/msg/Image"]
    pixels = random_pixels(rng, encoding, 5, 6)
    msg = numpy_to_image(pixels, encoding, header=make_header(typestore), msg_factory=image_type,
                         data_as="numpy")
    assert isinstance(msg, image_type)
    raw = typestore.serialize_cdr(msg, image_type.__msgtype__)
    back = typestore.deserialize_cdr(raw, image_type.__msgtype__)
    assert back.header.frame_id == "camera_optical" and back.encoding == encoding
    np.testing.assert_array_equal(image_to_numpy(back), pixels)


def test_rosbags_padded_image_and_compressed(typestore, rng):
    image_type = typestore.types["sensor_msgs/msg/Image"]
    pixels = random_pixels(rng, "bgr8", 5, 6)
    fields = padded(numpy_to_image(pixels, "bgr8"), extra=2)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    msg = typestore.deserialize_cdr(
        typestore.serialize_cdr(image_type(header=make_header(typestore), **fields),
                                image_type.__msgtype__),
        image_type.__msgtype__)
    assert msg.step == 20
    np.testing.assert_array_equal(image_to_rgb(msg), pixels[..., ::-1])
    compressed_type = typestore.types["sensor_msgs/msg/CompressedImage"]
    fmt, data = rgb_to_compressed(pixels, "png")
    cmsg = compressed_type(header=make_header(typestore), format=fmt,
                           data=np.frombuffer(data, np.uint8))
    back = typestore.deserialize_cdr(typestore.serialize_cdr(cmsg, compressed_type.__msgtype__),
                                     compressed_type.__msgtype__)
    np.testing.assert_array_equal(compressed_to_rgb(back), pixels)
