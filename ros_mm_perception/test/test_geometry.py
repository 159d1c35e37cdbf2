"""3D positions from a synthetic depth image rendered from known geometry.

The scene: a background wall at 4 m and a fronto-parallel rectangle (the object) at 2 m spanning
X in [-0.5, -0.1] m and Y in [-0.6, -0.1] m, seen by a pinhole camera. Each pixel's depth is where
its centre ray hits the scene, so the expected 3D centre and size follow from the geometry alone.
Tolerance: 1 micrometre (depth values are exact in both encodings: 2000 mm and 2.0 m).
"""

import numpy as np
import pytest

from ros_mm_perception.core.errors import ImageFormatError
from ros_mm_perception.core.perception.geometry import (
    box_position,
    check_depth,
    locate,
    read_depth,
)
from ros_mm_perception.core.results import Detection, Intrinsics

K = Intrinsics(fx=500.0, fy=400.0, cx=319.5, cy=239.5)
H, W = 480, 640
WALL, Z = 4.0, 2.0
X_RANGE, Y_RANGE = (-0.5, -0.1), (-0.6, -0.1)
TOL = 1e-6


def render(intrinsics=K, h=H, w=W, object_depth=None):
    """Depth in metres (float64) of the wall + rectangle scene; ``object_depth(u, v)`` tilts it."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = (u - intrinsics.cx) * Z / intrinsics.fx, (v - intrinsics.cy) * Z / intrinsics.fy
    inside = (x >= X_RANGE[0]) & (x < X_RANGE[1]) & (y >= Y_RANGE[0]) & (y < Y_RANGE[1])
    depth = np.full((h, w), WALL)
    depth[inside] = Z if object_depth is None else object_depth(u, v)[inside]
    return depth


def object_box(intrinsics=K):
    """The rectangle's projection as a corner-coordinate box (pixel i spans [i, i + 1))."""
    x0 = intrinsics.fx * X_RANGE[0] / Z + intrinsics.cx + 0.5
    x1 = intrinsics.fx * X_RANGE[1] / Z + intrinsics.cx + 0.5
    y0 = intrinsics.fy * Y_RANGE[0] / Z + intrinsics.cy + 0.5
    y1 = intrinsics.fy * Y_RANGE[1] / Z + intrinsics.cy + 0.5
    return (x0, y0, x1, y1)


EXPECTED_CENTRE = (sum(X_RANGE) / 2, sum(Y_RANGE) / 2, Z)
EXPECTED_SIZE = (X_RANGE[1] - X_RANGE[0], Y_RANGE[1] - Y_RANGE[0], 0.0)


def as_mm(depth_m):
    return np.round(depth_m * 1000).astype(np.uint16)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_centre_and_size_match_the_rendered_geometry(encoding):
    depth = render()
    depth = as_mm(depth) if encoding == "16UC1" else depth.astype(np.float32)
    centre, size = box_position(depth, K, object_box())
    np.testing.assert_allclose(centre, EXPECTED_CENTRE, atol=TOL)
    np.testing.assert_allclose(size, EXPECTED_SIZE, atol=TOL)


def test_the_background_around_the_object_does_not_pull_the_depth():
    x0, y0, x1, y1 = object_box()
    loose = (x0 - 15, y0 - 15, x1 + 15, y1 + 15)  # a detector's box is rarely tight
    centre, _ = box_position(render().astype(np.float32), K, loose)
    assert centre[2] == pytest.approx(Z, abs=TOL)


@pytest.mark.parametrize(
    "encoding,invalid",
    [
        ("16UC1", [0]),
        ("32FC1", [0.0, np.nan, np.inf, -np.inf, -1.0]),
    ],
)
def test_holes_and_zeros_are_ignored(encoding, invalid, rng):
    depth = render()
    depth = as_mm(depth) if encoding == "16UC1" else depth.astype(np.float32)
    x0, y0, x1, y1 = (int(round(c)) for c in object_box())
    patch = depth[y0:y1, x0:x1]
    holes = rng.random(patch.shape) < 0.4  # 40 % of the object's pixels have no reading
    patch[holes] = rng.choice(np.asarray(invalid, dtype=depth.dtype), size=int(holes.sum()))
    centre, size = box_position(depth, K, object_box())
    np.testing.assert_allclose(centre, EXPECTED_CENTRE, atol=TOL)
    np.testing.assert_allclose(size, EXPECTED_SIZE, atol=TOL)


def test_an_empty_centre_falls_back_to_the_whole_box():
    depth = render().astype(np.float32)
    x0, y0, x1, y1 = object_box()
    cx0, cx1 = int(x0 + (x1 - x0) * 0.2), int(np.ceil(x1 - (x1 - x0) * 0.2))
    cy0, cy1 = int(y0 + (y1 - y0) * 0.2), int(np.ceil(y1 - (y1 - y0) * 0.2))
    depth[cy0:cy1, cx0:cx1] = np.nan
    centre, _ = box_position(depth, K, object_box())
    np.testing.assert_allclose(centre, EXPECTED_CENTRE, atol=TOL)


def test_a_box_without_any_valid_depth_has_no_position():
    depth = as_mm(render())
    x0, y0, x1, y1 = (int(round(c)) for c in object_box())
    depth[y0:y1, x0:x1] = 0
    assert box_position(depth, K, object_box()) is None


def test_a_position_that_overflows_is_no_position(recwarn):
    depth = np.full((48, 64), 1e30, np.float32)
    tiny = Intrinsics(1e-300, 1e-300, 32.0, 24.0)
    mask = np.zeros((48, 64), bool)
    mask[10:20, 40:50] = True
    assert box_position(depth, tiny, (40, 10, 50, 20)) is None
    assert box_position(depth, tiny, (40, 10, 50, 20), mask=mask) is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_tilted_surface_gives_its_median_depth_and_visible_extent():
    x0, _, x1, _ = object_box()
    # Depth grows linearly from 2.0 m at the left edge to 2.4 m at the right edge of the object.
    depth = render(object_depth=lambda u, v: 2.0 + 0.4 * (u + 0.5 - x0) / (x1 - x0)).astype(
        np.float32
    )
    centre, size = box_position(depth, K, object_box())
    step = 0.4 / (x1 - x0)  # depth change from one pixel column to the next
    assert centre[2] == pytest.approx(2.2, abs=step)
    # The surface spans 0.4 m of depth; the 10th-90th percentile spread is 80 % of it.
    assert size[2] == pytest.approx(0.8 * 0.4, abs=2 * step)


def hollow_scene(shape, noise=0.0, seed=0):
    """A flat ``shape`` (ring or cross), 0.6 m across, 2 m from the camera, 1 m before a wall.

    Returns the depth (float32 metres), the shape's mask and its tight corner-coordinate box.
    """
    from ros_mm_perception.synthetic.scenes import shape_mask

    centre_px = (K.cx + 0.3 * K.fx / 2.0, K.cy - 0.2 * K.fy / 2.0)  # at (0.3, -0.2, 2.0) m
    radius_px = 0.3 * K.fx / 2.0
    mask = shape_mask(shape, centre_px, radius_px, 0.0, (H, W)) >= 0.5
    depth = np.full((H, W), 3.0)
    depth[mask] = 2.0
    depth += np.random.default_rng(seed).normal(0.0, noise, depth.shape)
    rows, cols = np.nonzero(mask)
    return (
        depth.astype(np.float32),
        mask,
        (cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0),
    )


@pytest.mark.parametrize("shape", ["ring", "cross"])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_a_hollow_shape_before_a_wall_keeps_its_own_depth_and_flat_size(shape, noise):
    depth, _, (x0, y0, x1, y1) = hollow_scene(shape, noise)
    loose = (x0 - 12, y0 - 12, x1 + 12, y1 + 12)
    centre, size = box_position(depth, K, loose)
    assert centre[2] == pytest.approx(2.0, abs=0.01)  # a window median gives the wall
    assert centre[0] == pytest.approx(0.3, abs=0.02)
    assert centre[1] == pytest.approx(-0.2, abs=0.02)
    assert size[2] < 0.05 + 3 * noise  # flat, not the 1 m gap to the wall


def test_a_ring_in_a_loose_box_keeps_its_depth_while_the_wall_fills_most_of_the_box():
    depth, mask, (x0, y0, x1, y1) = hollow_scene("ring", 0.01)
    w, h = x1 - x0, y1 - y0
    loose = (x0 - 0.6 * w, y0 - 0.6 * h, x1 + 0.6 * w, y1 + 0.6 * h)   # a sloppy box
    bx0, by0, bx1, by1 = (int(round(v)) for v in loose)
    share = mask[by0:by1, bx0:bx1].mean()
    assert share < 0.15                                               # mostly wall
    centre, _ = box_position(depth, K, loose)
    assert centre[2] == pytest.approx(2.0, abs=0.02)


@pytest.mark.parametrize("shape", ["ring", "cross"])
def test_a_mask_gives_the_median_over_its_pixels_and_the_extents_of_its_points(shape):
    depth, mask, _ = hollow_scene(shape, 0.005)
    # the mask bleeds one pixel onto the wall all round, as a mask model's edges do
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rows, cols = np.nonzero(grown)
    box = (cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0)
    centre, size = box_position(depth, K, box, mask=grown)
    np.testing.assert_allclose(centre, (0.3, -0.2, 2.0), atol=0.01)
    extent = (mask.any(axis=0).sum() * 2.0 / K.fx, mask.any(axis=1).sum() * 2.0 / K.fy)
    np.testing.assert_allclose(size[:2], extent, rtol=0.05)
    assert size[2] < 0.03


def test_a_mask_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ImageFormatError, match="mask"):
        box_position(render().astype(np.float32), K, object_box(), mask=np.ones((10, 10), bool))


def test_locate_uses_each_detections_mask():
    depth, mask, box = hollow_scene("ring")
    with_mask, without = Detection("ring", 0.9, box, mask=mask), Detection("ring", 0.9, box)
    locate([with_mask, without], depth, K, (H, W))
    assert with_mask.xyz[2] == pytest.approx(2.0, abs=1e-6)
    assert without.xyz[2] == pytest.approx(2.0, abs=1e-6)
    assert with_mask.size_xyz != without.size_xyz


def test_depth_at_half_resolution_is_scaled_onto_the_image():
    half = Intrinsics(K.fx / 2, K.fy / 2, (K.cx + 0.5) / 2 - 0.5, (K.cy + 0.5) / 2 - 0.5)
    depth = as_mm(render(half, H // 2, W // 2))
    centre, size = box_position(depth, K, object_box(), image_shape=(H, W))
    np.testing.assert_allclose(centre, EXPECTED_CENTRE, atol=TOL)
    np.testing.assert_allclose(size, EXPECTED_SIZE, atol=TOL)


def test_depth_with_another_aspect_ratio_is_a_clear_error():
    with pytest.raises(ImageFormatError, match="640x480"):
        box_position(np.zeros((480, 480), np.uint16), K, object_box(), image_shape=(H, W))


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint16), [[1, 2]]]
)
def test_bad_depth_arrays_are_rejected(bad):
    with pytest.raises(ImageFormatError):
        check_depth(bad)


def test_locate_sets_3d_only_when_depth_and_intrinsics_exist():
    dets = [Detection("box", 0.9, object_box()), Detection("nothing", 0.5, (0, 0, 4, 4))]
    depth = render().astype(np.float32)
    depth[0:4, 0:4] = np.nan
    locate(dets, None, K, (H, W))
    locate(dets, depth, None, (H, W))
    assert dets[0].xyz is None and dets[0].size_xyz is None
    locate(dets, depth, K, (H, W))
    np.testing.assert_allclose(dets[0].xyz, EXPECTED_CENTRE, atol=TOL)
    assert dets[1].xyz is None and dets[1].size_xyz is None


def test_read_depth_reads_16_bit_png_and_npy(tmp_path):
    import cv2

    depth = as_mm(render())
    cv2.imwrite(str(tmp_path / "d.png"), depth)
    np.save(tmp_path / "d.npy", depth.astype(np.float32) / 1000)
    assert np.array_equal(read_depth(tmp_path / "d.png"), depth)
    assert read_depth(tmp_path / "d.npy").dtype == np.float32
    with pytest.raises(ImageFormatError, match="does not exist"):
        read_depth(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageFormatError, match="uint8"):
        read_depth(tmp_path / "rgb.png")
