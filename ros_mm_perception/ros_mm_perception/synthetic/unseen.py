"""Scenes of the same world in a style the training renderer never makes, for honest evaluation.

The objects are the colours x shapes of :mod:`.scenes` (same phrases, same ground-truth boxes: the
extent of an object's visible pixels), but drawn unlike anything the embedded model was trained on:

* other shades of each colour (wider hue, saturation and value ranges), and shading across the
  object;
* dark outlines and soft drop shadows (the shadow is not part of the object's box);
* backgrounds of kinds training never uses (:data:`UNSEEN_BACKGROUNDS`): coloured pixel noise,
  stripes, wood grain, a checkerboard, blotches (overlapping blurred ellipses) and photographs
  (:data:`UNSEEN_PHOTOS`, crops of scikit-image's sample pictures that training never uses);
* clutter: distractor shapes that are not in the world (ellipses, hexagons, bars, arcs) in muted
  colours;
* any size band (down to 10 % of the short side) and, with ``side_band=True``, objects centred in
  the side bands of a wide frame (outside the centre square that a centre crop keeps);
* stronger lighting changes, vignetting and JPEG compression artefacts.

::

    scene = render_unseen_scene(np.random.default_rng(0), n_objects=3, size=(480, 640))
    frames = render_unseen_sequence(seed=0, n_frames=40)   # the same objects moving smoothly
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ros_mm_perception.synthetic.scenes import (COLOURS, SHAPES, Combo, Scene, SceneObject,
                                                _acceptable, _box_and_fraction, _pick_combos,
                                                caption, photo_background, require_photos, shade,
                                                shape_polygons)

UNSEEN_BACKGROUNDS = ("speckle", "stripes", "wood", "checker", "blotches", "photo")
UNSEEN_PHOTOS = ("coffee", "rocket", "motorcycle", "gravel", "brick")
"""Pictures behind the ``photo`` background: a cup on a table, a launch pad under trees, a garage,
gravel and a brick wall (the last two grey); none of them is among training's
:data:`.scenes.TRAINING_PHOTOS`."""
DISTRACTOR_SHAPES = ("ellipse", "hexagon", "bar", "arc")


def unseen_rgb(rng: np.random.Generator, colour: str) -> Tuple[float, float, float]:
    """Another shade of ``colour``: hue within +-8 OpenCV units, saturation 0.6-1, value 0.7-1.05
    of the base."""
    return shade(rng, colour, 8.0, (0.6, 1.0), (0.7, 1.05))


def _muted(rng: np.random.Generator, sat_max: int = 60) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, sat_max), rng.integers(50, 230)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def unseen_background(rng: np.random.Generator, hw: Tuple[int, int], kind: str) -> np.ndarray:
    """Background (float32 HxWx3, 0..255) of one of :data:`UNSEEN_BACKGROUNDS`."""
    h, w = hw
    a, b = _muted(rng), _muted(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "speckle":
        return a + rng.normal(0, rng.uniform(12, 30), (h, w, 3)).astype(np.float32)
    if kind == "stripes":
        theta, period = rng.uniform(0, np.pi), rng.uniform(8, 48)
        t = (np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period) > 0)[..., None]
        return np.where(t, a, b)
    if kind == "checker":
        cell = rng.uniform(12, 64)
        t = (((xx // cell) + (yy // cell)) % 2 == 0)[..., None]
        return np.where(t, a, b)
    if kind == "wood":
        cx, cy = rng.uniform(-w, 2 * w), rng.uniform(-3 * h, -h)
        warp = cv2.resize(rng.normal(0, 1, (8, 8)).astype(np.float32), (w, h),
                          interpolation=cv2.INTER_CUBIC)
        rings = np.sin(2 * np.pi * (np.hypot(xx - cx, (yy - cy) * 0.3) + warp * 12)
                       / rng.uniform(10, 30))
        wood = np.float32([rng.uniform(120, 200), rng.uniform(80, 140), rng.uniform(40, 90)])
        return wood * (0.85 + 0.15 * rings[..., None]) + rng.normal(0, 4,
                                                                    (h, w, 1)).astype(np.float32)
    if kind == "blotches":
        img = np.broadcast_to(a, (h, w, 3)).copy()
        for _ in range(int(rng.integers(15, 40))):
            layer = np.zeros((h, w), np.float32)
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(0.03, 0.25) * w), int(rng.uniform(0.03, 0.25) * h))
            cv2.ellipse(layer, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
            layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(2, 12))[..., None]
            img = img * (1 - layer) + _muted(rng, 90) * layer
        return img
    if kind == "photo":
        return photo_background(rng, hw, UNSEEN_PHOTOS)
    raise ValueError(f"unknown background {kind!r}; known: {', '.join(UNSEEN_BACKGROUNDS)}")


def _draw_distractors(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    """Paint ``count`` shapes that are not in the world, in muted colours."""
    h, w = img.shape[:2]
    short = min(h, w)
    for _ in range(count):
        layer = np.zeros((h, w), np.uint8)
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        size = int(rng.uniform(0.05, 0.2) * short)
        kind = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        if kind == "ellipse":
            cv2.ellipse(layer, centre, (size, max(2, int(size * rng.uniform(0.3, 0.6)))),
                        rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
        elif kind == "hexagon":
            t = np.arange(6) * np.pi / 3 + rng.uniform(0, np.pi)
            pts = np.stack([centre[0] + size * np.cos(t), centre[1] + size * np.sin(t)],
                           1).astype(np.int32)
            cv2.fillPoly(layer, [pts], 255, cv2.LINE_AA)
        elif kind == "bar":
            end = (int(centre[0] + 2 * size * np.cos(rng.uniform(0, np.pi))),
                   int(centre[1] + 2 * size * np.sin(rng.uniform(0, np.pi))))
            cv2.line(layer, centre, end, 255, max(2, size // 5), cv2.LINE_AA)
        else:
            cv2.ellipse(layer, centre, (size, size), rng.uniform(0, 360), 0, rng.uniform(90, 240),
                        255, max(2, size // 6), cv2.LINE_AA)
        alpha = (layer.astype(np.float32) / 255.0)[..., None]
        img = img * (1 - alpha) + _muted(rng, 80) * alpha
    return img


def _object_layers(shape: str, centre, radius: float, angle: float, hw, outline: bool):
    """Fill coverage and outline coverage (float32 HxW in [0, 1]) of one object."""
    polys = [np.round(p * 16).astype(np.int32)
             for p in shape_polygons(shape, centre, radius, angle)]
    fill = np.zeros(hw, np.uint8)
    cv2.fillPoly(fill, polys[:1], 255, cv2.LINE_AA, shift=4)
    if len(polys) > 1:
        cv2.fillPoly(fill, polys[1:], 0, cv2.LINE_AA, shift=4)
    line = np.zeros(hw, np.uint8)
    if outline:
        cv2.polylines(line, polys, True, 255, max(1, int(round(radius * 0.07))), cv2.LINE_AA,
                      shift=4)
    return fill.astype(np.float32) / 255.0, line.astype(np.float32) / 255.0


def _centre(rng, radius: float, hw, side_band: bool) -> Tuple[float, float]:
    h, w = hw
    y = rng.uniform(radius, h - radius)
    if not side_band or w <= h:
        return rng.uniform(radius, w - radius), y
    band = (w - h) / 2.0  # the centre square spans [band, w - band]
    x = rng.uniform(radius, max(radius, band))
    return (x if rng.random() < 0.5 else w - x), y


def render_unseen_scene(rng, n_objects: int = 1, size: Tuple[int, int] = (480, 640), *,
                        objects: Optional[Sequence[Combo]] = None,
                        background: Optional[str] = None,
                        size_range: Tuple[float, float] = (0.1, 0.6), side_band: bool = False,
                        distractors: Optional[int] = None, jpeg: bool = True,
                        centres: Optional[Sequence[Tuple[float, float, float]]] = None) -> Scene:
    """Render one scene in the unseen style (see the module docstring).

    ``size_range`` is the object's diameter as a fraction of the short side; ``side_band`` centres
    objects in the side bands of a wide frame; ``distractors`` is the number of clutter shapes
    (default 0-4 at random). ``centres`` fixes each object's ``(x, y, radius)`` (used by
    sequences). The style needs the ``photos`` extra (scikit-image), whatever the background drawn.
    """
    require_photos()
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    hw = (int(size[0]), int(size[1]))
    chosen = list(objects) if objects is not None else _pick_combos(rng, n_objects, None)
    for c, s in chosen:
        if c not in COLOURS or s not in SHAPES:
            raise ValueError(f"unknown object ({c!r}, {s!r})")
    kind = background or UNSEEN_BACKGROUNDS[int(rng.integers(len(UNSEEN_BACKGROUNDS)))]
    img = unseen_background(rng, hw, kind)
    img = _draw_distractors(rng, img,
                            int(rng.integers(0, 5)) if distractors is None else distractors)
    layers: List[Tuple[np.ndarray, np.ndarray]] = []
    looks = []
    for k, (colour, shape) in enumerate(chosen):
        for attempt in range(60):
            if centres is not None:
                x, y, radius = centres[k]
            else:
                radius = 0.5 * min(hw) * rng.uniform(*size_range) * (1.0 if attempt < 30 else 0.7)
                x, y = _centre(rng, radius, hw, side_band)
            angle = np.radians(rng.uniform(-30, 30))
            fill, line = _object_layers(shape, (x, y), radius, angle, hw,
                                        outline=rng.random() < 0.5)
            mask = np.maximum(fill, line)
            if centres is not None or _acceptable(
                mask, [np.maximum(*m) for m in layers], True, 0.6
            ):
                break
        else:
            raise ValueError(f"cannot place {len(chosen)} objects in a {hw[1]}x{hw[0]} image")
        layers.append((fill, line))
        looks.append((unseen_rgb(rng, colour), rng.random() < 0.5, rng.uniform(0.0, 0.3),
                      rng.uniform(0, 2 * np.pi), radius))
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
    for (fill, line), (rgb, shadow, relief, theta, radius) in zip(layers, looks):
        mask = np.maximum(fill, line)
        if shadow:
            offset = np.float32([[1, 0, radius * 0.15], [0, 1, radius * 0.15]])
            soft = cv2.GaussianBlur(cv2.warpAffine(mask, offset, (hw[1], hw[0])), (0, 0),
                                    max(1.0, radius * 0.1))
            img = img * (1 - 0.5 * soft[..., None])
        t = (xx * np.cos(theta) + yy * np.sin(theta)) / max(hw)
        colour = np.asarray(rgb, np.float32) * (1.0 + relief * (t - t.mean()))[..., None]
        img = img * (1 - fill[..., None]) + colour * fill[..., None]
        img = img * (1 - line[..., None]) + np.asarray(rgb, np.float32) * 0.3 * line[..., None]
    visible = []
    cover = np.zeros(hw, np.float32)
    for fill, line in reversed(layers):
        mask = np.maximum(fill, line)
        visible.append((*_box_and_fraction(mask * (1 - cover), mask), mask * (1 - cover) > 0.5))
        cover = np.maximum(cover, mask)
    visible.reverse()
    image = _finish(rng, img, jpeg)
    objs = [SceneObject(c, s, box, frac, i, mask)
            for i, ((c, s), (box, frac, mask)) in enumerate(zip(chosen, visible))]
    return Scene(image, objs, caption(chosen), kind)


def _finish(rng: np.random.Generator, img: np.ndarray, jpeg: bool) -> np.ndarray:
    """Brightness, colour cast, vignetting, sensor noise and JPEG compression; back to uint8."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - rng.uniform(0.0,
                                 0.35) * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2
    img = img * (rng.uniform(0.7, 1.2) * vignette)[..., None] * rng.uniform(0.9, 1.1,
                                                                            3).astype(np.float32)
    img = img + rng.normal(0, rng.uniform(1, 6), img.shape).astype(np.float32)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if jpeg:
        ok, data = cv2.imencode(".jpg", out[..., ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 71))])
        out = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def render_unseen_sequence(seed: int, n_frames: int, n_objects: int = 3,
                           size: Tuple[int, int] = (480, 640), *, speed: float = 0.02,
                           size_range: Tuple[float, float] = (0.15, 0.3)) -> List[Scene]:
    """``n_frames`` unseen-style scenes of the same objects moving smoothly, bouncing off the
    borders.

    The objects keep their ``object_id`` and may touch and occlude each other; background, shades
    and clutter stay fixed (each frame re-renders from the same seed), only the positions change.
    """
    require_photos()
    rng = np.random.default_rng(seed)
    hw = (int(size[0]), int(size[1]))
    chosen = _pick_combos(rng, n_objects, None)
    radius = 0.5 * min(hw) * rng.uniform(*size_range, n_objects)
    pos = np.stack([rng.uniform(radius, hw[1] - radius), rng.uniform(radius, hw[0] - radius)], 1)
    heading = rng.uniform(0, 2 * np.pi, n_objects)
    vel = np.stack([np.cos(heading), np.sin(heading)], 1) * speed * min(hw)
    style_seed = int(rng.integers(2**32))
    frames = []
    for _ in range(n_frames):
        centres = [(pos[i, 0], pos[i, 1], radius[i]) for i in range(n_objects)]
        frames.append(render_unseen_scene(np.random.default_rng(style_seed), size=hw,
                                          objects=chosen, centres=centres))
        pos += vel
        for axis, limit in ((0, hw[1]), (1, hw[0])):
            out = (pos[:, axis] < radius) | (pos[:, axis] > limit - radius)
            vel[out, axis] = -vel[out, axis]
            pos[:, axis] = np.clip(pos[:, axis], radius, limit - radius)
    return frames
