"""A rendered 3D room: the world's shapes standing at known places, seen by a robot's depth camera.

A :class:`World` is a box-shaped room (floor, four walls, ceiling) holding flat, free-standing
shapes (the colours and shapes of :mod:`.scenes`, each a disc-sized plate facing a direction,
rings and crosses included) and optional occluders (grey panels). :func:`render` casts one ray per
pixel through a pinhole camera (REP 103 optical frame) and returns the colour image, the depth in
metres (with the noise of a stereo camera: 1 mm + 1.5 mm per square metre, quantised to mm) and the
index of the object each pixel sees. :func:`drive` is a robot's path through the room (poses of its
camera in ``map``) on which objects leave and re-enter the view; :func:`look_at` a robot stopping
to look at one place.

Two styles: ``own`` (muted textured walls, a wooden floor, the world's base colours) and
``unseen`` (striped and tiled walls, a saturated floor, wider shades, strong light falling off,
JPEG compression), so that a figure measured in the unseen style was not tuned on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ros_mm_perception.core.perception.transforms import RigidTransform
from ros_mm_perception.core.results import Intrinsics
from ros_mm_perception.synthetic.scenes import COLOURS, SHAPES, object_rgb, shade, shape_mask

STYLES = ("own", "unseen")
TEXTURE = 256
"""Side in texels of each shape's coverage texture."""
OPTICAL = Rotation.from_matrix([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Optical axes (x right, y down, z forward) of a camera looking along the map's +x (z up)."""


@dataclass(frozen=True)
class WorldObject:
    """A flat shape of ``radius`` metres standing at ``position`` (its centre), facing ``yaw``."""

    colour: str
    shape: str
    position: Tuple[float, float, float]
    radius: float
    yaw: float
    rgb: Tuple[float, float, float] = (128.0, 128.0, 128.0)

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Panel:
    """A grey rectangle ``width`` x ``height`` metres centred at ``position``, facing ``yaw``."""

    position: Tuple[float, float, float]
    width: float
    height: float
    yaw: float


@dataclass
class World:
    """A room ``size`` (x, y, height) metres, corner at the origin, with objects and occluders."""

    objects: List[WorldObject]
    panels: List[Panel] = field(default_factory=list)
    size: Tuple[float, float, float] = (6.0, 5.0, 2.6)
    style: str = "own"
    seed: int = 0


def build_world(seed: int, n_objects: int = 8, style: str = "own") -> World:
    """A room with ``n_objects`` different shapes 0.15-0.25 m in radius along its walls, at
    0.4-1.4 m height, facing the room's middle, at least 0.8 m apart."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
    rng = np.random.default_rng(seed)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = [combos[i] for i in rng.choice(len(combos), n_objects, replace=False)]
    room = (6.0, 5.0, 2.6)
    middle = np.array([room[0] / 2, room[1] / 2])
    objects, placed = [], []
    for colour, shape in chosen:
        for _ in range(200):
            xy = np.array([rng.uniform(0.5, room[0] - 0.5), rng.uniform(0.5, room[1] - 0.5)])
            inner = np.abs(xy - middle) < np.array([room[0] / 2 - 1.3, room[1] / 2 - 1.3])
            if inner.all() or any(np.linalg.norm(xy - p) < 0.8 for p in placed):
                continue
            break
        placed.append(xy)
        towards = middle - xy
        yaw = float(np.arctan2(towards[1], towards[0]) + rng.uniform(-0.4, 0.4))
        rgb = (
            object_rgb(rng, colour)
            if style == "own"
            else shade(rng, colour, 8.0, (0.6, 1.0), (0.6, 1.1))
        )
        objects.append(
            WorldObject(
                colour,
                shape,
                (float(xy[0]), float(xy[1]), float(rng.uniform(0.4, 1.4))),
                float(rng.uniform(0.15, 0.25)),
                yaw,
                rgb,
            )
        )
    return World(objects, size=room, style=style, seed=seed)


def drive(
    world: World, n_frames: int, laps: float = 1.0, height: float = 0.8
) -> List[RigidTransform]:
    """Camera poses (optical frame in ``map``) of a robot circling the room's middle, looking
    outwards at the walls, a little down, so every object leaves and re-enters the view."""
    sx, sy, _ = world.size
    poses = []
    for i in range(n_frames):
        a = 2 * np.pi * laps * i / n_frames
        centre = np.array([sx / 2 + 0.6 * np.cos(a), sy / 2 + 0.5 * np.sin(a), height])
        yaw = a + 0.3 * np.sin(3 * a)
        rotation = Rotation.from_euler("zy", [yaw, 0.12]) * OPTICAL
        poses.append(RigidTransform(centre, rotation))
    return poses


def look_at(
    world: World, target, n_frames: int, distance: float = 1.6, height: float = 0.8
) -> List[RigidTransform]:
    """Camera poses (optical frame in ``map``) of a robot that stops ``distance`` metres from the
    place ``target`` (on the side of the room's middle) and looks at it from ``n_frames`` spots
    0.5 m apart across the line of sight."""
    target = np.asarray(target, float)
    middle = np.array(world.size[:2]) / 2
    towards = middle - target[:2]
    towards /= np.linalg.norm(towards)
    across = np.array([-towards[1], towards[0]])
    poses = []
    for s in np.linspace(-0.25, 0.25, n_frames):
        xy = np.clip(target[:2] + distance * towards + s * across, 0.3, middle * 2 - 0.3)
        ray = np.array([*(target[:2] - xy), target[2] - height])
        yaw = np.arctan2(ray[1], ray[0])
        pitch = np.arctan2(-ray[2], np.linalg.norm(ray[:2]))
        rotation = Rotation.from_euler("zy", [yaw, pitch]) * OPTICAL
        poses.append(RigidTransform(np.array([*xy, height]), rotation))
    return poses


@lru_cache(maxsize=64)
def _coverage(shape: str) -> np.ndarray:
    half = TEXTURE / 2
    return shape_mask(shape, (half, half), half * 0.98, 0.0, (TEXTURE, TEXTURE)) >= 0.5


def _plane_axes(yaw: float):
    normal = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    return normal, right, np.array([0.0, 0.0, 1.0])


@lru_cache(maxsize=8)
def _room_textures(seed: int, style: str):
    """Wall, floor and ceiling textures (float RGB, 256 x 256) of a room."""
    rng = np.random.default_rng(seed + 7)
    n = 256

    def smooth(cells):
        noise = rng.random((cells, cells)).astype(np.float32)
        return cv2.resize(noise, (n, n), interpolation=cv2.INTER_CUBIC)

    if style == "own":
        wall = np.array([190.0, 185.0, 175.0]) * (0.85 + 0.15 * smooth(6))[..., None]
        grain = 0.8 + 0.2 * np.sin(np.linspace(0, 40, n))[None, :] * smooth(4)
        floor = np.array([150.0, 110.0, 70.0]) * grain[..., None]
        ceiling = np.full((n, n, 3), 225.0)
    else:
        stripes = (np.arange(n) // 16 % 2).astype(np.float32)[None, :].repeat(n, 0)
        wall = np.array([110.0, 140.0, 170.0]) + 60.0 * stripes[..., None]
        tiles = ((np.arange(n)[:, None] // 32 + np.arange(n)[None, :] // 32) % 2).astype(
            np.float32
        )
        floor = np.array([40.0, 120.0, 110.0]) + 50.0 * tiles[..., None]
        ceiling = np.full((n, n, 3), 200.0) * (0.7 + 0.3 * smooth(3))[..., None]
    return wall.astype(np.float32), floor.astype(np.float32), ceiling.astype(np.float32)


def render(
    world: World,
    pose: RigidTransform,
    k: Intrinsics,
    hw: Tuple[int, int],
    rng: Optional[np.random.Generator] = None,
    removed: Sequence[int] = (),
):
    """``(rgb uint8, depth float32 metres, object index per pixel (-1: none))`` seen from ``pose``
    (the optical frame in ``map``); objects whose index is in ``removed`` are left out."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1).reshape(
        -1, 3
    )
    rays = pose.rotation.apply(rays_cam)
    origin = pose.translation
    n = rays.shape[0]
    best = np.full(n, np.inf)  # distance along the ray (optical z, as rays_cam z = 1)
    colour = np.zeros((n, 3), np.float32)
    index = np.full(n, -1, np.int64)
    wall_tex, floor_tex, ceiling_tex = _room_textures(world.seed, world.style)
    sx, sy, sz = world.size

    def hit_plane(point, normal):
        denom = rays @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(point) - origin) @ normal) / denom
        t[~np.isfinite(t) | (t <= 1e-6)] = np.inf
        return t

    def take(t, rgb, idx=-1):
        closer = t < best
        best[closer] = t[closer]
        colour[closer] = rgb[closer] if rgb.ndim == 2 else rgb
        index[closer] = idx

    def textured(texture, a, b, scale):
        ia = (np.floor(a / scale * 256).astype(np.int64)) % 256
        ib = (np.floor(b / scale * 256).astype(np.int64)) % 256
        return texture[ib, ia]

    # room: floor, ceiling, four walls
    for point, normal, tex, axes in (
        ((0, 0, 0), (0, 0, 1), floor_tex, (0, 1)),
        ((0, 0, sz), (0, 0, -1), ceiling_tex, (0, 1)),
        ((0, 0, 0), (1, 0, 0), wall_tex, (1, 2)),
        ((sx, 0, 0), (-1, 0, 0), wall_tex, (1, 2)),
        ((0, 0, 0), (0, 1, 0), wall_tex, (0, 2)),
        ((0, sy, 0), (0, -1, 0), wall_tex, (0, 2)),
    ):
        t = hit_plane(point, np.asarray(normal, float))
        p = origin + rays * np.where(np.isfinite(t), t, 0.0)[:, None]
        take(t, textured(tex, p[:, axes[0]], p[:, axes[1]], 1.5))
    # occluders and objects
    for panel in world.panels:
        normal, right, up = _plane_axes(panel.yaw)
        t = hit_plane(panel.position, normal)
        p = origin + rays * np.where(np.isfinite(t), t, 0.0)[:, None] - np.asarray(panel.position)
        inside = (np.abs(p @ right) <= panel.width / 2) & (np.abs(p @ up) <= panel.height / 2)
        t[~inside] = np.inf
        take(t, np.array([120.0, 120.0, 125.0], np.float32))
    for i, obj in enumerate(world.objects):
        if i in removed:
            continue
        normal, right, up = _plane_axes(obj.yaw)
        t = hit_plane(obj.position, normal)
        p = origin + rays * np.where(np.isfinite(t), t, 0.0)[:, None] - np.asarray(obj.position)
        a, b = (p @ right) / obj.radius, (p @ up) / obj.radius
        inside = (np.abs(a) < 1) & (np.abs(b) < 1)
        col = np.clip(((a + 1) / 2 * TEXTURE).astype(np.int64), 0, TEXTURE - 1)
        row = np.clip(((1 - b) / 2 * TEXTURE).astype(np.int64), 0, TEXTURE - 1)
        inside &= _coverage(obj.shape)[row, col]
        t[~inside] = np.inf
        take(t, np.asarray(obj.rgb, np.float32), i)
    depth = best.reshape(h, w)  # rays have optical z = 1: t is the depth
    image = colour.reshape(h, w, 3)
    rng = rng or np.random.default_rng(0)
    # light: a lamp at the ceiling's middle, falling off with distance (more in the unseen style)
    hit = origin + rays * np.where(np.isfinite(best), best, 0.0)[:, None]
    lamp = np.array([sx / 2, sy / 2, sz])
    falloff = 0.35 if world.style == "own" else 0.6
    light = 1.0 - falloff * np.clip(np.linalg.norm(hit - lamp, axis=1) / 5.0, 0, 1)
    image = image * light.reshape(h, w, 1) + rng.normal(0, 3.0, image.shape)
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    if world.style == "unseen":
        ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
        rgb = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    noisy = depth + rng.normal(0, 1.0, depth.shape) * (0.001 + 0.0015 * depth**2)
    noisy = np.round(noisy * 1000) / 1000
    noisy[~np.isfinite(depth)] = 0.0
    return rgb, noisy.astype(np.float32), index.reshape(h, w)
