"""The "shapes" world: sampling a scene and rendering its image and instance masks.

A scene is 1-4 coloured shapes (circle, square, triangle, star) on a muted textured background. Objects lie
fully inside the image, their boxes overlap little (box IoU <= 0.2, and at most 35 % of the smaller box is
covered) and later objects occlude earlier ones. Everything is drawn from one ``numpy.random.Generator``,
so the same seed gives the same pixels.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['CLASSES', 'COLOURS', 'COLOUR_RGB', 'DemoObject', 'Scene', 'sample_scene', 'render_scene']

CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
COLOURS: tuple[str, ...] = ('red', 'green', 'blue', 'yellow', 'purple')
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    'red': (215, 35, 35), 'green': (35, 170, 60), 'blue': (40, 80, 225),
    'yellow': (240, 210, 30), 'purple': (145, 50, 190),
}
MAX_BOX_IOU = 0.2
MAX_COVER = 0.35          # intersection / smaller box area
SIZE_RANGE = (0.12, 0.45)  # object extent (circumscribed-circle diameter) as a fraction of the image side
_SUPERSAMPLE = 4


@dataclass
class DemoObject:
    """One object: ``polygon`` (P, 2) float xy in image pixels, ``box`` the polygon's xyxy extent."""

    shape: str
    colour: str
    polygon: np.ndarray
    # filled by render_scene: visible mask (H, W) bool, its tight box (x1, y1, x2, y2) inclusive pixels
    mask: np.ndarray | None = None
    vis_box: tuple[int, int, int, int] | None = None
    drawn_pixels: int = 0  # pixels the object covered when drawn, before later objects occluded it

    @property
    def box(self) -> tuple[float, float, float, float]:
        p = self.polygon
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


@dataclass
class Scene:
    """A sampled scene: ``size`` (square side in pixels), background parameters and the objects in drawing order."""

    size: int
    objects: list[DemoObject] = field(default_factory=list)
    background: dict = field(default_factory=dict)


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (P, 2) of ``shape`` with circumradius ``r`` centred at (cx, cy), rotated by ``angle`` radians."""
    if shape == 'circle':
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        radii = np.full_like(t, r)
    elif shape == 'square':
        t = angle + math.pi / 4 + np.arange(4) * math.pi / 2
        radii = np.full_like(t, r)
    elif shape == 'triangle':
        t = angle - math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        radii = np.full_like(t, r)
    elif shape == 'star':
        t = angle - math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {CLASSES}.")
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _box_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    """(IoU, intersection / smaller area) of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(area_a + area_b - inter, 1e-9), inter / max(min(area_a, area_b), 1e-9)


def sample_scene(rng: np.random.Generator, size: int) -> Scene:
    """Sample 1-4 objects (uniform count) with limited overlap, and a background.

    Shapes repeat on purpose (each later object copies an earlier shape with probability 0.4) so that
    counting questions have answers beyond 0 and 1.
    """
    scene = Scene(size=size, background=_sample_background(rng))
    n = int(rng.integers(1, 5))
    for _ in range(n):
        if scene.objects and rng.random() < 0.4:
            shape = scene.objects[int(rng.integers(len(scene.objects)))].shape
        else:
            shape = CLASSES[int(rng.integers(len(CLASSES)))]
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        for attempt in range(200):
            lo, hi = SIZE_RANGE
            if attempt >= 100:  # crowded: try the smaller half of the size range
                hi = (lo + hi) / 2
            extent = rng.uniform(lo, hi) * size
            r = extent / 2
            cx, cy = rng.uniform(r, size - r, size=2)
            poly = _shape_polygon(shape, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
            poly = np.clip(poly, 0.0, size - 1e-3)
            obj = DemoObject(shape, colour, poly)
            if all(iou <= MAX_BOX_IOU and cover <= MAX_COVER
                   for iou, cover in (_box_overlap(obj.box, o.box) for o in scene.objects)):
                scene.objects.append(obj)
                break
    return scene


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour (saturation <= 0.18) that no object colour resembles."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0, 0.18), rng.uniform(0.3, 0.8)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def _sample_background(rng: np.random.Generator) -> dict:
    kind = ('noise', 'gradient', 'stripes')[int(rng.integers(3))]
    c1 = _muted_colour(rng)
    c2 = np.clip(c1 + rng.uniform(-40, 40, size=3).mean() + rng.uniform(-8, 8, size=3), 40, 215)
    return dict(kind=kind, c1=c1, c2=c2.astype(np.float32), angle=float(rng.uniform(0, math.pi)),
                period=float(rng.uniform(5, 18)), cells=int(rng.integers(3, 9)),
                seed=int(rng.integers(2 ** 31)))


def _render_background(bg: dict, size: int) -> np.ndarray:
    """(H, W, 3) float32 texture in 0..255."""
    rng = np.random.default_rng(bg['seed'])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    proj = xx * math.cos(bg['angle']) + yy * math.sin(bg['angle'])
    if bg['kind'] == 'gradient':
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    elif bg['kind'] == 'stripes':
        t = 0.5 + 0.5 * np.sign(np.sin(2 * math.pi * proj / bg['period'])) * 0.8
    else:  # smooth blotches: a coarse random grid, bilinearly enlarged
        coarse = Image.fromarray((rng.random((bg['cells'], bg['cells'])) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    t = t[..., None]
    img = bg['c1'] * (1 - t) + bg['c2'] * t
    return img.astype(np.float32) + 6 * rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None]


def render_scene(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw the scene; fill each object's visible ``mask`` and ``vis_box``.

    Returns:
        image: (H, W, 3) uint8 RGB, shapes anti-aliased by 4x supersampling.
        instances: (H, W) uint8, 0 = background, k = the k-th object (1-based, drawing order) where visible.
    """
    size = scene.size
    img = _render_background(scene.background, size)
    instances = np.zeros((size, size), np.uint8)
    s = _SUPERSAMPLE
    for k, obj in enumerate(scene.objects, start=1):
        # work in the object's bounding crop only
        x0, y0 = (max(0, int(math.floor(v)) - 1) for v in obj.polygon.min(axis=0))
        x1, y1 = (min(size, int(math.ceil(v)) + 1) for v in obj.polygon.max(axis=0))
        canvas = Image.new('L', ((x1 - x0) * s, (y1 - y0) * s), 0)
        pts = [((float(x) - x0) * s, (float(y) - y0) * s) for x, y in obj.polygon]
        ImageDraw.Draw(canvas).polygon(pts, fill=255)
        alpha = np.asarray(canvas.resize((x1 - x0, y1 - y0), Image.BOX), dtype=np.float32)[..., None] / 255
        base = np.array(COLOUR_RGB[obj.colour], np.float32) + rng.uniform(-12, 12, size=3)
        # soft directional shading (+-10 %) so objects are not perfectly flat
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        shade = 1 + 0.1 * ((xx * math.cos(a) + yy * math.sin(a)) / size - 0.5)
        colour = np.clip(base * shade[..., None], 0, 255)
        crop = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = crop * (1 - alpha) + colour * alpha
        inside = alpha[..., 0] >= 0.5
        instances[y0:y1, x0:x1][inside] = k
        obj.drawn_pixels = int(inside.sum())
    img += 3 * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    for k, obj in enumerate(scene.objects, start=1):
        obj.mask = instances == k
        ys, xs = np.nonzero(obj.mask)
        obj.vis_box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None
    return image, instances
