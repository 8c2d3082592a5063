"""Procedural 32x32 cartoon faces whose attributes are known by construction.

Attributes (each a large-area visual feature, so a small UNet's bottleneck can see it):
``skin`` (face colour), ``eyeglasses`` (thick dark frames round both eyes), ``hair`` (colour of
the hair cap and sides). Nuisance variation (position, size, background colour, expression,
small colour jitter) is drawn independently of the attributes.

Rendering is vectorised over a batch with numpy and uses soft (anti-aliased) edges: one call
renders thousands of faces a second on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "skin": ("light", "dark"),
    "eyeglasses": ("no", "yes"),
    "hair": ("black", "brown", "blond"),
}

SKIN_RGB = np.array([[238, 200, 170], [104, 64, 44]], dtype=np.float32)
HAIR_RGB = np.array([[28, 24, 26], [150, 84, 32], [240, 208, 104]], dtype=np.float32)
FRAME_RGB = np.array([16, 18, 30], dtype=np.float32)
EYE_RGB = np.array([30, 30, 40], dtype=np.float32)
MOUTH_RGB = np.array([170, 40, 50], dtype=np.float32)


@dataclass(frozen=True)
class FaceParams:
    """Per-face parameters: attribute class indices plus nuisance variables, one row per face."""

    skin: np.ndarray  # (n,) int
    eyeglasses: np.ndarray  # (n,) int
    hair: np.ndarray  # (n,) int
    cx: np.ndarray  # face centre, pixels
    cy: np.ndarray
    rx: np.ndarray  # face half-width, pixels
    ry: np.ndarray
    background: np.ndarray  # (n, 3) RGB 0..255
    smile: np.ndarray  # mouth curvature in [-1, 1]
    tint: np.ndarray  # (n, 3) small per-face colour jitter, RGB units

    def __len__(self) -> int:
        return len(self.skin)

    def labels(self) -> dict[str, np.ndarray]:
        return {"skin": self.skin, "eyeglasses": self.eyeglasses, "hair": self.hair}


def sample_params(
    n: int,
    rng: np.random.Generator,
    probs: dict[str, list[float] | tuple[float, ...] | np.ndarray] | None = None,
    labels: dict[str, np.ndarray] | None = None,
) -> FaceParams:
    """Draw ``n`` faces. Attribute classes come from ``labels`` if given, else from ``probs``
    (independent per attribute; uniform where an attribute is not named)."""
    chosen: dict[str, np.ndarray] = {}
    for name, classes in ATTRIBUTES.items():
        if labels is not None and name in labels:
            chosen[name] = np.asarray(labels[name], dtype=np.int64)
            if chosen[name].shape != (n,):
                raise ValueError(f"labels[{name!r}] must have shape ({n},)")
            continue
        p = np.full(len(classes), 1.0 / len(classes))
        if probs is not None and name in probs:
            p = np.asarray(probs[name], dtype=np.float64)
            if p.shape != (len(classes),) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
                raise ValueError(
                    f"probs[{name!r}] must be {len(classes)} non-negative numbers summing to 1"
                )
        chosen[name] = rng.choice(len(classes), size=n, p=p)
    # Nuisance variables: drawn after the attributes, from the same generator, in a fixed order.
    hue = rng.uniform(0.0, 1.0, n)
    background = _hsv_to_rgb(hue, rng.uniform(0.15, 0.45, n), rng.uniform(0.55, 0.85, n))
    return FaceParams(
        skin=chosen["skin"],
        eyeglasses=chosen["eyeglasses"],
        hair=chosen["hair"],
        cx=16.0 + rng.uniform(-2.0, 2.0, n),
        cy=17.0 + rng.uniform(-1.5, 1.5, n),
        rx=rng.uniform(8.5, 10.5, n),
        ry=rng.uniform(10.0, 12.0, n),
        background=background * 255.0,
        smile=rng.uniform(-1.0, 1.0, n),
        tint=rng.normal(0.0, 6.0, (n, 3)),
    )


def render(params: FaceParams) -> np.ndarray:
    """Render faces to uint8 images of shape (n, 32, 32, 3)."""
    n = len(params)
    s = IMAGE_SIZE
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    x = xs[None] - params.cx[:, None, None].astype(np.float32)
    y = ys[None] - params.cy[:, None, None].astype(np.float32)
    rx = params.rx[:, None, None].astype(np.float32)
    ry = params.ry[:, None, None].astype(np.float32)

    img = np.broadcast_to(params.background[:, None, None, :], (n, s, s, 3)).astype(np.float32)
    tint = params.tint[:, None, None, :].astype(np.float32)
    skin_rgb = SKIN_RGB[params.skin][:, None, None, :] + tint
    hair_rgb = HAIR_RGB[params.hair][:, None, None, :] + tint

    # Hair behind the head: a larger ellipse raised above the face, cut off at jaw level.
    hair_back = _ellipse_mask(x, y + 0.18 * ry, 1.22 * rx, 1.08 * ry)
    hair_back *= _smooth_step(0.35 * ry - y)
    img = _over(img, hair_rgb, hair_back)
    # Face.
    img = _over(img, skin_rgb, _ellipse_mask(x, y, rx, ry))
    # Fringe: the top of the face is hair.
    fringe = _ellipse_mask(x, y, rx + 0.7, ry + 0.7) * _smooth_step(-0.42 * ry - y)
    img = _over(img, hair_rgb, fringe)

    ex = 0.40 * rx
    ey = -0.08 * ry
    d_left = np.sqrt((x + ex) ** 2 + (y - ey) ** 2)
    d_right = np.sqrt((x - ex) ** 2 + (y - ey) ** 2)
    eye = np.maximum(_smooth_step(1.5 - d_left), _smooth_step(1.5 - d_right))
    img = _over(img, EYE_RGB, eye)

    # Mouth: a thick arc whose curvature is the expression.
    smile = params.smile[:, None, None].astype(np.float32)
    mouth_y = 0.50 * ry + smile * 0.012 * (x**2) - smile * 0.8
    mouth = _smooth_step(1.0 - np.abs(y - mouth_y)) * _smooth_step(0.35 * rx - np.abs(x))
    img = _over(img, MOUTH_RGB, mouth)

    # Eyeglasses: 2 px rings round both eyes and a bridge.
    glasses_on = (params.eyeglasses == 1)[:, None, None].astype(np.float32)
    r_ring = 3.3
    ring = np.maximum(
        _smooth_step(1.0 - np.abs(d_left - r_ring)), _smooth_step(1.0 - np.abs(d_right - r_ring))
    )
    bridge = _smooth_step(0.8 - np.abs(y - ey + 0.5)) * _smooth_step(ex - r_ring + 0.5 - np.abs(x))
    img = _over(img, FRAME_RGB, np.maximum(ring, bridge) * glasses_on)

    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_batch(
    n: int,
    seed: int,
    probs: dict[str, list[float] | tuple[float, ...] | np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Convenience: draw and render ``n`` faces; returns (images, labels)."""
    params = sample_params(n, np.random.default_rng(seed), probs)
    return render(params), params.labels()


def _smooth_step(d: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape whose signed distance inside is ``d`` pixels."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _ellipse_mask(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    r = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    return _smooth_step((1.0 - r) * np.minimum(rx, ry))


def _over(img: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1.0 - a) + np.broadcast_to(rgb, img.shape) * a


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return table[i, np.arange(len(h))]
