"""Draws the module and extension icon, ``MedSegCNN.png`` beside this script: 128 x 128 RGBA, an MRI-like slice
with two segmented structures (outlined) on a rounded dark square. Deterministic; run ``python make_icon.py``."""

from pathlib import Path

import numpy as np
from matplotlib.image import imsave

SIZE = 128
OUTPUT = Path(__file__).with_name("MedSegCNN.png")
BACKGROUND_TOP, BACKGROUND_BOTTOM = np.array([0.11, 0.17, 0.27]), np.array([0.15, 0.29, 0.45])
SEGMENTS = (  # centre x, centre y, radius x, radius y, angle (degrees), RGB
    (50.0, 70.0, 19.0, 9.0, -28.0, (0.96, 0.64, 0.38)),
    (80.0, 61.0, 15.0, 8.0, 24.0, (0.16, 0.74, 0.66)),
)


def coverage(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased pixel coverage of a shape from its signed distance (pixels, negative inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def rounded_square(x: np.ndarray, y: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance to a square of half-width ``half`` centred in the icon, with rounded corners."""
    centre = (SIZE - 1) / 2
    qx = np.abs(x - centre) - (half - radius)
    qy = np.abs(y - centre) - (half - radius)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Approximate signed distance to a rotated ellipse (exact on its axes, good enough for anti-aliasing)."""
    theta = np.deg2rad(angle)
    u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
    v = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
    return (np.hypot(u / rx, v / ry) - 1.0) * min(rx, ry)


def over(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Composites a layer (colour ``rgb``, per-pixel ``alpha``) over the premultiplied RGBA ``canvas`` in place."""
    canvas[..., :3] = rgb * alpha[..., None] + canvas[..., :3] * (1.0 - alpha[..., None])
    canvas[..., 3] = alpha + canvas[..., 3] * (1.0 - alpha)


def draw() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    canvas = np.zeros((SIZE, SIZE, 4))
    shade = (y / (SIZE - 1))[..., None]
    over(canvas, BACKGROUND_TOP * (1 - shade) + BACKGROUND_BOTTOM * shade, coverage(rounded_square(x, y, 62.0, 22.0)))

    head = ellipse(x, y, 64.0, 64.0, 46.0, 52.0, 0.0)
    folds = 0.5 + 0.5 * np.sin(0.21 * x + 1.7 * np.sin(0.13 * y)) * np.cos(0.17 * y - 1.3 * np.sin(0.11 * x))
    brightness = np.clip(0.42 + 0.3 * folds - 0.25 * np.clip(head / -46.0, 0, 1) ** 3, 0.0, 1.0)
    skull = np.clip(1.0 - np.abs(head + 3.0) / 2.5, 0.0, 1.0)  # a bright rim just inside the outline
    over(canvas, np.repeat(np.maximum(brightness, skull)[..., None], 3, axis=2), coverage(head))

    for cx, cy, rx, ry, angle, colour in SEGMENTS:
        distance = ellipse(x, y, cx, cy, rx, ry, angle)
        over(canvas, np.array(colour), 0.88 * coverage(distance))
        over(canvas, np.ones(3), coverage(np.abs(distance) - 0.9))
    rgba = canvas.copy()
    visible = rgba[..., 3] > 0
    rgba[visible, :3] /= rgba[visible, 3:4]  # un-premultiply for the PNG
    return np.clip(rgba, 0.0, 1.0)


if __name__ == "__main__":
    imsave(OUTPUT, draw())
