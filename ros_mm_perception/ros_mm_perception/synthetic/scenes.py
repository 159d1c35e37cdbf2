"""Procedurally rendered scenes of coloured shapes, with captions and ground-truth boxes.

The generator draws 8 colours x 6 shapes (:data:`COLOURS`, :data:`SHAPES`) with random size,
position and rotation (up to 30 degrees from upright by default, as things stand on a floor or a
table) on a flat, gradient, noise or textured-floor background (:data:`BACKGROUNDS`),
then applies uneven lighting, a colour cast, blur and sensor noise. With ``varied=True`` (what the
embedded models mostly train on) scenes also get wider shades of each colour, more backgrounds
(:data:`VARIED_BACKGROUNDS`, some of them saturated, and photographs), clutter that is not in the
world (blobs, cables, dots), dark edges and soft shadows on some objects, stronger lighting and
JPEG compression. Objects may occlude each other, but each stays at least ``min_visible`` visible.
Every object comes with its phrase ("red circle") and its box: the extent of its visible pixels,
``(x0, y0, x1, y1)`` in pixels.

It feeds the embedded model's training, its evaluation, the tests and the demo::

    scene = render_scene(np.random.default_rng(0), n_objects=3, size=(480, 640))
    scene.image, scene.caption, [(o.phrase, o.box) for o in scene.objects]
    frames = render_sequence(seed=0, n_frames=20)   # the same objects moving smoothly
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.results import Box

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "cyan": (30, 200, 220),
    "blue": (30, 60, 220),
    "purple": (135, 40, 190),
    "pink": (250, 110, 190),
}
"""Colour name → base RGB (each object jitters hue, saturation and value around it)."""

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
BACKGROUNDS = ("flat", "gradient", "noise", "floor")
VARIED_BACKGROUNDS = BACKGROUNDS + ("fractal", "lines", "cells", "patches")
"""The backgrounds of ``varied`` scenes: the plain ones plus multi-octave colour noise, straight
lines, a mosaic of flat cells and scattered rectangles."""
VIVID_BACKGROUNDS = 0.3
"""Share of ``varied`` scenes whose background is saturated (:func:`vivid_colour`) instead of
muted."""
PHOTO_BACKGROUNDS = 0.2
"""Share of ``varied`` scenes drawn over a photograph (:data:`TRAINING_PHOTOS`) instead."""
TRAINING_PHOTOS = ("astronaut", "chelsea", "camera", "grass", "coins", "moon", "hubble_deep_field",
                   "immunohistochemistry")
"""Photographs of scikit-image's sample data (public domain or CC0) behind training's photo scenes:
a portrait, a cat, a man with a camera, grass, coins, the moon, a deep-sky field and a stained
tissue (four of them grey). The unseen evaluation style draws on others
(:data:`.unseen.UNSEEN_PHOTOS`)."""

Combo = Tuple[str, str]
"""A ``(colour, shape)`` pair."""


@dataclass(frozen=True)
class SceneObject:
    """One rendered object: what it is and where its visible pixels are."""

    colour: str
    shape: str
    box: Box
    visible_fraction: float = 1.0
    object_id: int = 0
    """Stable index of the object within a scene or a sequence (for tracking)."""
    mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    """Its visible pixels (HxW bool: coverage above one half, the pixels its box spans)."""

    @property
    def phrase(self) -> str:
        return phrase(self.colour, self.shape)


@dataclass
class Scene:
    """An HxWx3 uint8 RGB image, its objects (bottom to top) and a caption naming all of them."""

    image: np.ndarray
    objects: List[SceneObject] = field(default_factory=list)
    caption: str = ""
    background: str = "flat"


def phrase(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def all_combos() -> List[Combo]:
    """Every ``(colour, shape)`` pair, colours outermost."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def all_phrases() -> List[str]:
    """Every colour-shape phrase ("red circle", ...), in :func:`all_combos` order."""
    return [phrase(c, s) for c, s in all_combos()]


def caption(objects: Sequence[Combo]) -> str:
    """Natural caption naming the objects: "a red circle", "a red circle and a blue star", ..."""
    names = [f"{_article(c)} {phrase(c, s)}" for c, s in objects]
    if not names:
        return "background"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ----------------------------------------------------------------------------------------------
# shapes

def shape_polygons(shape: str, centre: Tuple[float, float], radius: float,
                   angle: float) -> List[np.ndarray]:
    """Outline polygons (float ``N x 2``) of a shape; a ring is its outer and inner circle.

    ``radius`` is the circumradius in pixels, ``angle`` the rotation in radians.
    """
    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        unit = [np.stack([np.cos(t), np.sin(t)], 1)]
        if shape == "ring":
            unit.append(unit[0] * 0.55)
    elif shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        unit = [np.stack([np.cos(t), np.sin(t)], 1) * 0.95]
    elif shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        unit = [np.stack([np.cos(t), np.sin(t)], 1)]
    elif shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        unit = [np.stack([np.cos(t), np.sin(t)], 1) * r[:, None]]
    elif shape == "cross":
        a, b = 0.3, 0.95
        unit = [np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a],
                          [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]])]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [p @ rot.T * radius + np.asarray(centre, dtype=np.float64) for p in unit]


def shape_mask(shape: str, centre, radius: float, angle: float, hw: Tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (float32 HxW) of one shape."""
    mask = np.zeros(hw, np.uint8)
    polys = shape_polygons(shape, centre, radius, angle)
    fixed = [np.round(p * 16).astype(np.int32) for p in polys]  # 4 fractional bits
    cv2.fillPoly(mask, fixed[:1], 255, cv2.LINE_AA, shift=4)
    if len(fixed) > 1:  # ring: cut the hole
        cv2.fillPoly(mask, fixed[1:], 0, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


# ------------------------------------------------------------------------------------------
# backgrounds

def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour (float 0..255) so that the objects stand out."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 70), rng.integers(60, 220)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


VIVID_HUE_GAP = 10.0
"""A vivid background's hue stays this many OpenCV hue units (2 degrees each) away from every
object's colour in the scene, so each object can still be told from the ground it stands on."""


def vivid_colour(rng: np.random.Generator, avoid: Sequence[str] = ()) -> np.ndarray:
    """A saturated RGB colour (float 0..255; saturation 80-200 of 255, value 60-210) of any hue at
    least :data:`VIVID_HUE_GAP` from the hues of the colours named in ``avoid`` (a wooden floor, a
    painted wall, grass); a muted colour where no hue is far enough."""
    taken = [_hsv(COLOURS[c])[0] for c in avoid]
    for _ in range(20):
        hue = rng.uniform(0, 180)
        if all(_hue_gap(hue, t) >= VIVID_HUE_GAP for t in taken):
            hsv = np.uint8([[[round(hue) % 180, rng.integers(80, 201), rng.integers(60, 211)]]])
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    return _muted_colour(rng)


def _smooth_noise(rng: np.random.Generator, hw: Tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (float32 HxW): a random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC), -1, 1)


PHOTOS_HINT = ("the photographs of the unseen evaluation style and of training come from "
               "scikit-image: pip install 'ros_mm_perception[photos]' (or pip install "
               "scikit-image)")


def require_photos() -> None:
    """Raise :class:`UserError` naming the ``photos`` extra when scikit-image is missing."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        raise UserError(PHOTOS_HINT) from None


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One of scikit-image's sample pictures (``skimage.data.<name>()``; ``motorcycle``: the left
    view of ``stereo_motorcycle``) as HxWx3 uint8 RGB, grey ones repeated on the three channels.

    Needs the ``photos`` extra (:func:`require_photos`)."""
    require_photos()
    from skimage import data

    if name != "motorcycle" and not callable(getattr(data, name, None)):
        raise ValueError(f"unknown photo {name!r}: not in skimage.data")
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    return np.ascontiguousarray(image)


def photo_background(rng: np.random.Generator, hw: Tuple[int, int],
                     names: Sequence[str]) -> np.ndarray:
    """A random crop (50-100 % of the largest that fits, the frame's aspect, maybe mirrored) of one
    of the photos ``names`` (:func:`photo`), resized to ``hw`` (float32 HxWx3, 0..255)."""
    image = photo(names[int(rng.integers(len(names)))])
    (ph, pw), (h, w) = image.shape[:2], hw
    scale = rng.uniform(0.5, 1.0) * min(ph / h, pw / w)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = image[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    shrink = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=shrink).astype(np.float32)


def render_background(rng: np.random.Generator, hw: Tuple[int, int], kind: str,
                      base_colour: Callable[[np.random.Generator],
                                            np.ndarray] = _muted_colour) -> np.ndarray:
    """Background image (float32 HxWx3, 0..255) of one of :data:`VARIED_BACKGROUNDS`.

    ``base_colour`` draws its main colours (the ground of every kind but ``cells``, both ends of a
    gradient); lines, cells and patches on it stay muted.
    """
    h, w = hw
    base = base_colour(rng)
    if kind == "flat":
        return np.broadcast_to(base, (h, w, 3)).copy()
    if kind == "gradient":
        other = base_colour(rng)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx / w - 0.5) * np.cos(theta) + (yy / h - 0.5) * np.sin(theta)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        return base * (1 - t) + other * t
    if kind == "noise":
        coarse = _smooth_noise(rng, hw, int(rng.integers(3, 9)))[..., None] * rng.uniform(15, 40)
        fine = rng.normal(0, rng.uniform(4, 14), (h, w, 1)).astype(np.float32)
        return base + coarse + fine
    if kind == "floor":
        return _floor(rng, hw, base)
    if kind == "fractal":
        octaves = [_smooth_noise(rng, hw, cells) * amp
                   for cells, amp in ((3, 1.0), (7, 0.6), (17, 0.35), (41, 0.2))]
        tint = rng.uniform(-1, 1, 3).astype(np.float32) * rng.uniform(10, 35)
        field_ = sum(octaves)[..., None]
        return base + field_ * rng.uniform(20, 45) + field_ * tint
    if kind == "lines":
        img = np.broadcast_to(base, (h, w, 3)).copy()
        for _ in range(int(rng.integers(4, 20))):
            a = (int(rng.uniform(-0.2, 1.2) * w), int(rng.uniform(-0.2, 1.2) * h))
            b = (int(rng.uniform(-0.2, 1.2) * w), int(rng.uniform(-0.2, 1.2) * h))
            cv2.line(img, a, b, _muted_colour(rng).tolist(),
                     int(rng.integers(1, max(2, min(h, w) // 30))), cv2.LINE_AA)
        return img
    if kind == "cells":
        n = int(rng.integers(6, 30))
        seeds = rng.uniform(0, 1, (n, 2)) * (w, h)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        nearest = np.argmin((xx[..., None] - seeds[:, 0]) ** 2
                            + (yy[..., None] - seeds[:, 1]) ** 2, axis=-1)
        palette = np.stack([_muted_colour(rng) for _ in range(n)])
        return palette[nearest] + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    if kind == "patches":
        img = np.broadcast_to(base, (h, w, 3)).copy()
        for _ in range(int(rng.integers(5, 25))):
            centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
            dims = (float(rng.uniform(0.05, 0.4) * w), float(rng.uniform(0.05, 0.4) * h))
            corners = cv2.boxPoints((centre, dims, float(rng.uniform(0, 180)))).astype(np.int32)
            cv2.fillPoly(img, [corners], _muted_colour(rng).tolist(), cv2.LINE_AA)
        return img
    raise ValueError(f"unknown background {kind!r}; known: {', '.join(VARIED_BACKGROUNDS)}")


def _floor(rng: np.random.Generator, hw: Tuple[int, int], base: np.ndarray) -> np.ndarray:
    """Wooden planks or tiles seen in perspective, with grain noise."""
    h, w = hw
    tex_h, tex_w = 256, 256
    tex = np.empty((tex_h, tex_w, 3), np.float32)
    tex[:] = base
    if rng.random() < 0.5:  # planks: bands of slightly different tone with streaky grain
        edges = np.cumsum(rng.integers(20, 48, 16))
        for i, (a, b) in enumerate(zip(np.r_[0, edges[:-1]], edges)):
            tex[:, a:b] *= rng.uniform(0.82, 1.12)
        grain = cv2.resize(rng.normal(0, 1, (tex_h // 16, tex_w)).astype(np.float32),
                           (tex_w, tex_h))
        tex += grain[..., None] * 8
        tex[:, np.minimum(edges, tex_w - 1)] *= 0.55
    else:  # tiles with grout lines
        step = int(rng.integers(32, 72))
        grout = base * rng.uniform(0.5, 0.8)
        tex[::step] = grout
        tex[:, ::step] = grout
        tex += rng.normal(0, 4, (tex_h, tex_w, 1)).astype(np.float32)
    # Perspective: the texture's top edge recedes towards a horizon above the image.
    squeeze = rng.uniform(0.0, 0.35) * w
    src = np.float32([[0, 0], [tex_w, 0], [tex_w, tex_h], [0, tex_h]])
    dst = np.float32([[squeeze, 0], [w - squeeze, 0], [w, h], [0, h]])
    warp = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(tex, warp, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)


# ----------------------------------------------------------------------------------------------
# scenes

@dataclass(frozen=True)
class _Placement:
    colour: str
    shape: str
    rgb: Tuple[float, float, float]
    centre: Tuple[float, float]
    radius: float
    angle: float


def _hsv(rgb) -> np.ndarray:
    return cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0].astype(np.float64)


def _hue_gap(a: float, b: float) -> float:
    """Distance between two OpenCV hues (0..180, 2 degrees a unit) around the colour circle."""
    d = abs(a - b) % 180
    return min(d, 180 - d)


def shade(rng: np.random.Generator, colour: str, hue_reach: float, saturation: Tuple[float, float],
          value: Tuple[float, float]) -> Tuple[float, float, float]:
    """The base colour with its hue moved by up to ``hue_reach`` OpenCV units (2 degrees each) and
    its saturation and value scaled by factors drawn from the given ranges (RGB floats 0..255)."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    hsv = _hsv(COLOURS[colour])
    hsv[0] = (hsv[0] + rng.uniform(-hue_reach, hue_reach)) % 180
    hsv[1] *= rng.uniform(*saturation)
    hsv[2] = min(255.0, hsv[2] * rng.uniform(*value))
    rgb = cv2.cvtColor(np.uint8([[np.round(hsv)]]), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(float(v) for v in rgb)


def object_rgb(rng: np.random.Generator, colour: str) -> Tuple[float, float, float]:
    """The base colour with a little hue, saturation and value jitter (RGB floats 0..255)."""
    return shade(rng, colour, 4.0, (0.8, 1.0), (0.8, 1.0))


def _varied_hue_reach() -> Dict[str, float]:
    hues = {name: _hsv(rgb)[0] for name, rgb in COLOURS.items()}
    return {name: min(6.0,
                      0.45 * min(_hue_gap(h, other) for o, other in hues.items() if o != name))
            for name, h in hues.items()}


VARIED_HUE_REACH = _varied_hue_reach()
"""Per colour, how far (OpenCV hue units) a varied shade may move: at most 6 (12 degrees) and less
than 0.45 of the way to the nearest other named hue."""


def varied_rgb(rng: np.random.Generator, colour: str) -> Tuple[float, float, float]:
    """A wider shade of the base colour (RGB floats 0..255): hue within :data:`VARIED_HUE_REACH`
    (orange and yellow are 24 degrees apart), saturation 0.55-1 and value 0.65-1.05 of the base."""
    return shade(rng, colour, VARIED_HUE_REACH.get(colour, 0.0), (0.55, 1.0), (0.65, 1.05))


def _pick_combos(rng: np.random.Generator, n: int,
                 combos: Optional[Sequence[Combo]]) -> List[Combo]:
    pool = list(combos) if combos is not None else all_combos()
    if n > len(pool):
        raise ValueError(f"asked for {n} distinct objects but only {len(pool)} colour-shape "
                         "combinations allowed")
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def _place(rng, combos: Sequence[Combo], hw, size_range, occlusion: bool, min_visible: float,
           max_rotation: float, shade=object_rgb):
    """Random placements whose objects stay inside the image and at least ``min_visible``
    visible."""
    h, w = hw
    short = min(h, w)
    placed: List[_Placement] = []
    masks: List[np.ndarray] = []
    for colour, shape in combos:
        for attempt in range(40):
            scale = 1.0 if attempt < 20 else 0.7  # shrink when the image is crowded
            radius = 0.5 * short * rng.uniform(*size_range) * scale
            centre = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
            angle = np.radians(rng.uniform(-max_rotation, max_rotation))
            cand = _Placement(colour, shape, shade(rng, colour), centre, radius, angle)
            mask = shape_mask(shape, centre, radius, cand.angle, hw)
            if _acceptable(mask, masks, occlusion, min_visible):
                break
        else:
            raise ValueError(f"cannot place {len(combos)} objects in a {w}x{h} image; use fewer "
                             "or smaller ones")
        placed.append(cand)
        masks.append(mask)
    return placed, masks


def _acceptable(mask: np.ndarray, below: List[np.ndarray], occlusion: bool,
                min_visible: float) -> bool:
    """Whether ``mask`` drawn on top keeps every object below at least ``min_visible`` visible."""
    for k, other in enumerate(below):
        if float((other * mask).sum()) == 0:
            continue
        if not occlusion:
            return False
        cover = np.maximum.reduce(below[k + 1:] + [mask])
        if float((other * (1.0 - cover)).sum()) < min_visible * float(other.sum()):
            return False
    return True


def _composite(background: np.ndarray, placements: Sequence[_Placement],
               masks: Sequence[np.ndarray], shading: np.ndarray,
               looks: Optional[Sequence[Tuple[bool, bool]]] = None
               ) -> Tuple[np.ndarray, List[Tuple[Box, float, np.ndarray]]]:
    """Paint objects over the background (bottom to top); visible box, fraction and mask of each.

    ``looks`` gives each object (dark edge, soft shadow); neither changes its box.
    """
    img = background.copy()
    cover = np.zeros(background.shape[:2], np.float32)  # coverage by objects drawn later (top)
    visible = []
    for p, m in zip(reversed(placements), reversed(masks)):
        seen = m * (1.0 - cover)
        visible.append((*_box_and_fraction(seen, m), seen > 0.5))
        cover = np.maximum(cover, m)
    for k, (p, m) in enumerate(zip(placements, masks)):
        edge, shadow = looks[k] if looks is not None else (False, False)
        if shadow:
            shift = p.radius * 0.12
            moved = cv2.warpAffine(m, np.float32([[1, 0, shift], [0, 1, shift]]), m.shape[::-1])
            soft = cv2.GaussianBlur(moved, (0, 0), max(1.0, p.radius * 0.12))
            img = img * (1 - 0.45 * soft[..., None])
        a = m[..., None]
        colour = np.asarray(p.rgb, np.float32) * shading[..., None]
        if edge:  # a dark band just inside the outline
            width = max(1, int(round(p.radius * 0.08)))
            inner = cv2.erode(m, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
            colour = colour * (1 - 0.65 * (m - inner)[..., None])
        img = img * (1 - a) + colour * a
    return img, visible[::-1]


CLUTTER = ("blob", "cable", "dots")
"""Things drawn in ``varied`` scenes that are not in the world: irregular blobs, cables and dot
clusters."""


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    """Paint ``count`` clutter items (:data:`CLUTTER`) in muted colours."""
    h, w = img.shape[:2]
    short = min(h, w)
    for _ in range(count):
        layer = np.zeros((h, w), np.uint8)
        kind = CLUTTER[int(rng.integers(len(CLUTTER)))]
        cx, cy, size = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.04, 0.18) * short
        if kind == "blob":
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            r = size * (1
                        + 0.35
                        * np.convolve(np.tile(rng.uniform(-1, 1, 24), 3), np.ones(5) / 5,
                                      "same")[24:48])
            pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t) * rng.uniform(0.5, 1)], 1)
            cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
        elif kind == "cable":
            steps = rng.normal(0, 1, (6, 2)).cumsum(0) * size * 0.6 + (cx, cy)
            cv2.polylines(layer, [np.round(steps).astype(np.int32)], False, 255,
                          max(1, int(size * 0.12)), cv2.LINE_AA)
        else:
            for _ in range(int(rng.integers(3, 9))):
                centre = (int(cx + rng.normal(0, size)), int(cy + rng.normal(0, size)))
                cv2.circle(layer, centre, max(1, int(size * rng.uniform(0.08, 0.2))), 255, -1,
                           cv2.LINE_AA)
        alpha = (layer.astype(np.float32) / 255.0)[..., None]
        img = img * (1 - alpha) + _muted_colour(rng) * alpha
    return img


def _jpeg(rng: np.random.Generator, image: np.ndarray,
          quality: Tuple[int, int] = (20, 90)) -> np.ndarray:
    """``image`` (uint8 RGB) saved as a JPEG of a random quality in ``quality`` and decoded
    again."""
    ok, data = cv2.imencode(".jpg", image[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*quality))])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def _box_and_fraction(seen: np.ndarray, full: np.ndarray) -> Tuple[Box, float]:
    ys, xs = np.nonzero(seen > 0.5)
    frac = float(seen.sum() / max(float(full.sum()), 1e-6))
    if xs.size == 0:
        return (0.0, 0.0, 0.0, 0.0), 0.0
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), frac


def _object_shading(rng: np.random.Generator, hw) -> np.ndarray:
    """A gentle diagonal shading field (about 0.85..1.1) that gives the flat shapes some relief."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xx / max(w, 1) * np.cos(theta) + yy / max(h, 1) * np.sin(theta))
    return 1.0 + rng.uniform(0.0, 0.12) * (t - t.mean())


def _finish(rng: np.random.Generator, img: np.ndarray, lighting: bool, blur: bool,
            strong: bool = False) -> np.ndarray:
    """Lighting (uneven brightness, colour cast), blur and sensor noise; back to uint8.

    ``strong`` widens the brightness and colour-cast ranges (``varied`` scenes).
    """
    h, w = img.shape[:2]
    if lighting:
        field_ = 1.0 + _smooth_noise(rng, (h, w), 2) * rng.uniform(0.0, 0.4 if strong else 0.25)
        cast = rng.uniform(*((0.9, 1.1) if strong else (0.95, 1.05)), 3).astype(np.float32)
        img = img * (rng.uniform(*((0.6, 1.3) if strong else (0.75, 1.2))) * field_)[...,
                                                                                     None] * cast
    if blur:
        sigma = rng.uniform(0.0, 1.2) * min(h, w) / 240.0
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0.0, 4.0)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_scene(rng, n_objects: int = 1, size: Tuple[int, int] = (480, 640), *,
                 objects: Optional[Sequence[Combo]] = None,
                 combos: Optional[Sequence[Combo]] = None, background: Optional[str] = None,
                 size_range: Tuple[float, float] = (0.2, 0.45), max_rotation: float = 30.0,
                 occlusion: bool = True, min_visible: float = 0.6, lighting: bool = True,
                 blur: bool = True, varied: bool = False) -> Scene:
    """Render one scene of ``n_objects`` distinct colour-shape objects.

    ``rng`` is a numpy Generator or an int seed; ``size`` is ``(height, width)``. ``objects`` names
    the ``(colour, shape)`` pairs to draw (else they are drawn at random from ``combos``, default
    all). ``size_range`` is the object's diameter as a fraction of the image's short side; objects
    turn by up to ``max_rotation`` degrees either way from upright (180 for any angle).
    ``background`` is one of :data:`BACKGROUNDS` (default random; with ``varied`` one of
    :data:`VARIED_BACKGROUNDS`, or at random a photograph, ``"photo"``). ``varied`` adds the
    training variety described in the module docstring.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    hw = (int(size[0]), int(size[1]))
    if min(hw) < 8:
        raise ValueError(f"scene size {size} is too small; at least 8x8 pixels")
    chosen = list(objects) if objects is not None else _pick_combos(rng, n_objects, combos)
    for c, s in chosen:
        if c not in COLOURS or s not in SHAPES:
            raise ValueError(f"unknown object ({c!r}, {s!r}); colours: {', '.join(COLOURS)}; "
                             f"shapes: {', '.join(SHAPES)}")
    kinds = VARIED_BACKGROUNDS if varied else BACKGROUNDS
    kind = background or kinds[int(rng.integers(len(kinds)))]
    bg = None
    if varied:  # a photograph, a saturated ground or (below) a muted one
        ground = rng.random()
        if background is None and ground < PHOTO_BACKGROUNDS:
            kind, bg = "photo", photo_background(rng, hw, TRAINING_PHOTOS)
        elif ground >= 1.0 - VIVID_BACKGROUNDS:
            bg = render_background(rng, hw, kind,
                                   partial(vivid_colour, avoid=[c for c, _ in chosen]))
    if bg is None:
        bg = render_background(rng, hw, kind)
    looks = None
    if varied:
        bg = _clutter(rng, bg, int(rng.integers(0, 6)))
    placements, masks = _place(rng, chosen, hw, size_range, occlusion, min_visible, max_rotation,
                               varied_rgb if varied else object_rgb)
    if varied:
        looks = [(bool(rng.random() < 0.3), bool(rng.random() < 0.3)) for _ in placements]
    img, visible = _composite(bg, placements, masks, _object_shading(rng, hw), looks)
    image = _finish(rng, img, lighting, blur, strong=varied)
    if varied and rng.random() < 0.5:
        image = _jpeg(rng, image)
    objs = [SceneObject(p.colour, p.shape, box, frac, i, mask)
            for i, (p, (box, frac, mask)) in enumerate(zip(placements, visible))]
    return Scene(image, objs, caption([(p.colour, p.shape) for p in placements]), kind)


def render_sequence(seed: int, n_frames: int, n_objects: int = 3,
                    size: Tuple[int, int] = (480, 640), *,
                    objects: Optional[Sequence[Combo]] = None, background: Optional[str] = None,
                    speed: float = 0.02,
                    size_range: Tuple[float, float] = (0.15, 0.3)) -> List[Scene]:
    """``n_frames`` scenes of the same objects moving smoothly (bouncing off the image borders).

    Each object keeps its ``object_id``, colour and shape; it moves about ``speed`` of the image's
    short side per frame and sways slowly (within 30 degrees of upright). Objects may cross and
    occlude each other. The background and lighting stay fixed; only the sensor noise changes per
    frame.
    """
    rng = np.random.default_rng(seed)
    hw = (int(size[0]), int(size[1]))
    chosen = list(objects) if objects is not None else _pick_combos(rng, n_objects, None)
    kind = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg = render_background(rng, hw, kind)
    shading = _object_shading(rng, hw)
    start, _ = _place(rng, chosen, hw, size_range, occlusion=False, min_visible=1.0,
                      max_rotation=30.0)
    light_seed = int(rng.integers(2**32))  # the same lighting in every frame
    short = min(hw)
    pos = np.array([p.centre for p in start], np.float64)
    heading = rng.uniform(0, 2 * np.pi, len(start))
    vel = np.stack([np.cos(heading), np.sin(heading)], 1) * speed * short
    sway = rng.uniform(0, 2 * np.pi, len(start)), rng.uniform(0.02, 0.06, len(start))
    frames = []
    for t in range(n_frames):
        placements = [_Placement(p.colour, p.shape, p.rgb, tuple(pos[i]), p.radius,
                                 np.radians(30.0) * np.sin(sway[0][i] + sway[1][i] * t))
                      for i, p in enumerate(start)]
        masks = [shape_mask(p.shape, p.centre, p.radius, p.angle, hw) for p in placements]
        img, visible = _composite(bg, placements, masks, shading)
        img = _finish(np.random.default_rng(light_seed), img, lighting=True, blur=False)
        noise = np.random.default_rng([light_seed, t]).normal(0, 2.0, img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        objs = [SceneObject(p.colour, p.shape, box, frac, i, mask)
                for i, (p, (box, frac, mask)) in enumerate(zip(placements, visible))]
        frames.append(Scene(img, objs, caption([(p.colour, p.shape) for p in placements]), kind))
        for i, p in enumerate(start):  # move and bounce off the borders
            pos[i] += vel[i]
            for axis, limit in ((0, hw[1]), (1, hw[0])):
                if pos[i, axis] < p.radius or pos[i, axis] > limit - p.radius:
                    vel[i, axis] = -vel[i, axis]
                    pos[i, axis] = np.clip(pos[i, axis], p.radius, limit - p.radius)
    return frames
