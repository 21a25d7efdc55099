"""The embedded toy identity dataset: procedurally drawn faces with labelled identities.

Every stage of the project can be exercised without downloading a face dataset. An identity is a
parameter vector (face outline, skin tone, eyes, brows, nose, mouth, hair, beard, glasses, moles);
an image of it is that vector drawn with OpenCV's anti-aliased primitives under per-image nuisance
(yaw drawn as a cylinder-projected shift of the inner features, roll, scale, shift, expression,
lighting, background, clothes, noise, blur, JPEG artefacts). Identities come from a narrow prior
and about a third of them are near-twins of another one, so a small recogniser separates them but
does not reach 100% on held-out identities.

``write_toy_dataset`` writes an InsightFace-layout training folder (``train.rec``, ``train.idx``,
``property``; labels ``0 .. C-1``) and two verification files drawn from HELD-OUT identities:
``toy_lfw.bin`` (normal nuisance) and ``toy_cfp_fp.bin`` (stronger pose, roll and lighting changes,
as CFP-FP is harder than LFW), plus ``toy_meta.json``. Output is byte-identical for a given seed.

CLI: ``scoremix toy-data --out DIR [--identities N --images-per-identity M --test-identities T
--pairs P --seed S]``.

Why one long module: the face drawing, the identity sampler and the writers are one procedure whose output
must stay byte-identical for a seed; split, a change in one file could silently change the others' bytes.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scoremix_plugin.errors import InputError

# Canonical drawing frame: 112 x 112, face centre here (the host's aligned crops put the eyes
# at about y = 52 and the mouth at about y = 92 in a 112 px crop).
FRAME = 112.0
CX, CY = 56.0, 60.0
ZOOM = 1.3  # drawn heads are scaled up so the inner face fills the crop, as in aligned face crops
_OUTLINE_SHIFT = 0.25  # silhouette shift per unit sin(yaw), in face half-widths
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn with 1/16 px precision
_ONE = 1 << _SHIFT

# Identity palettes (RGB). Skin runs light -> dark; an identity interpolates between neighbours.
_SKIN = np.array(
    [[247, 218, 196], [236, 196, 164], [222, 172, 134], [196, 144, 104], [160, 110, 74], [112, 74, 48], [80, 52, 36]],
    np.float32,
)
_HAIR = np.array(
    [
        [20, 18, 18],
        [60, 40, 28],
        [105, 70, 40],
        [150, 110, 60],
        [205, 170, 105],
        [165, 75, 35],
        [150, 150, 150],
        [225, 225, 220],
    ],
    np.float32,
)
_HAIR_P = np.array([0.26, 0.24, 0.16, 0.1, 0.09, 0.06, 0.06, 0.03])
_IRIS = np.array([[70, 45, 25], [110, 75, 40], [60, 100, 150], [80, 120, 80], [110, 115, 120]], np.float32)
_IRIS_P = np.array([0.4, 0.25, 0.15, 0.1, 0.1])

HAIR_STYLES = ("short", "fringe", "side_part", "long", "receding", "bald", "curly", "bun")
_HAIR_STYLE_P = np.array([0.2, 0.14, 0.16, 0.17, 0.1, 0.05, 0.1, 0.08])


@dataclass(frozen=True)
class Identity:
    """One toy identity. Lengths are pixels in the 112 px canonical frame."""

    face_w: float  # half width of the face
    face_h: float  # half height of the face
    jaw: float  # 0 = round chin, 1 = narrow pointed chin
    cheek: float  # widening of the cheekbones (-1 .. 1)
    skin: float  # position on the skin palette (0 = lightest)
    skin_warm: float  # red / yellow undertone shift
    eye_dx: float  # half distance between the eyes
    eye_y: float  # eye height relative to the face centre
    eye_w: float  # eye half width
    eye_h: float  # eye half height (open)
    eye_tilt: float  # degrees, outer corners up
    iris: int  # index into the iris palette
    brow_thick: float
    brow_arch: float  # arch height
    brow_tilt: float  # inner end lower (angry) or higher (worried)
    brow_gap: float  # distance above the eye
    nose_len: float
    nose_w: float
    mouth_y: float  # distance below the nose tip
    mouth_w: float
    lip: float  # lip thickness
    lip_red: float  # lip colour saturation
    ear: float  # ear size
    hair_style: int  # index into HAIR_STYLES
    hair_colour: int  # index into the hair palette
    hair_line: float  # hairline height above the eyes
    hair_volume: float  # how far hair stands out from the skull
    beard: int  # 0 none, 1 stubble, 2 moustache, 3 full beard
    glasses: int  # 0 none, 1 round, 2 square
    mole_x: float  # a mole's position (face-relative, -1 .. 1); mole_r 0 = none
    mole_y: float
    mole_r: float

    def vector(self) -> list[float]:
        return [float(getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class Nuisance:
    """How strongly images of one identity vary (per-image factors are drawn within these ranges)."""

    yaw: float = 0.28  # radians, max |yaw|
    pitch: float = 2.0  # px, vertical shift of the inner features
    roll: float = 7.0  # degrees
    scale: float = 0.07  # +- relative
    shift: float = 3.5  # px
    light: float = 0.35  # max strength of the lighting gradient
    brightness: float = 0.15
    contrast: float = 0.15
    noise: float = 5.0  # max Gaussian noise std, in 0..255 units
    blur: float = 1.0  # max Gaussian blur sigma, px
    jpeg_min: int = 40  # lowest JPEG quality of the re-compression (applied to half the images)


NORMAL = Nuisance()
# The CFP-FP analogue: one image of a pair near frontal, the other at a strong yaw, plus harder lighting.
STRONG = Nuisance(
    yaw=0.62,
    pitch=3.0,
    roll=13.0,
    scale=0.1,
    shift=5.0,
    light=0.6,
    brightness=0.22,
    contrast=0.25,
    noise=7.0,
    blur=1.4,
    jpeg_min=30,
)


# Identities.


def _draw_identity(rng: np.random.Generator) -> Identity:
    u, n = rng.uniform, rng.normal
    style = int(rng.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P))
    beard = int(rng.choice(4, p=[0.62, 0.12, 0.1, 0.16]))
    return Identity(
        face_w=float(np.clip(n(27.0, 1.8), 23, 31)),
        face_h=float(np.clip(n(34.0, 1.8), 30, 38)),
        jaw=float(u(0.0, 1.0)),
        cheek=float(u(-1.0, 1.0)),
        skin=float(u(0.0, len(_SKIN) - 1.001)),
        skin_warm=float(n(0.0, 1.0)),
        eye_dx=float(np.clip(n(11.5, 1.0), 9.5, 14)),
        eye_y=float(np.clip(n(-7.5, 1.2), -10.5, -4.5)),
        eye_w=float(np.clip(n(5.0, 0.5), 4.0, 6.2)),
        eye_h=float(np.clip(n(2.6, 0.35), 1.8, 3.4)),
        eye_tilt=float(n(0.0, 5.0)),
        iris=int(rng.choice(len(_IRIS), p=_IRIS_P)),
        brow_thick=float(u(1.0, 3.2)),
        brow_arch=float(u(-0.5, 2.5)),
        brow_tilt=float(n(0.0, 1.2)),
        brow_gap=float(u(4.0, 7.0)),
        nose_len=float(u(12.0, 17.0)),
        nose_w=float(u(3.0, 6.0)),
        mouth_y=float(u(6.5, 10.0)),
        mouth_w=float(u(7.0, 12.0)),
        lip=float(u(1.0, 3.0)),
        lip_red=float(u(0.0, 1.0)),
        ear=float(u(0.8, 1.25)),
        hair_style=style,
        hair_colour=int(rng.choice(len(_HAIR), p=_HAIR_P)),
        hair_line=float(u(14.0, 20.0)) + (5.0 if HAIR_STYLES[style] == "receding" else 0.0),
        hair_volume=float(u(1.0, 6.0)),
        beard=beard,
        glasses=int(rng.choice(3, p=[0.8, 0.1, 0.1])),
        mole_x=float(u(-0.8, 0.8)),
        mole_y=float(u(-0.3, 0.8)),
        mole_r=float(u(0.8, 1.5)) if u() < 0.3 else 0.0,
    )


def _twin_of(parent: Identity, rng: np.random.Generator) -> Identity:
    """A near-twin: the parent's vector with small jitter and a few traits redrawn."""
    fresh = _draw_identity(rng)
    d = asdict(parent)
    names = [f.name for f in fields(Identity)]
    redraw = set(rng.choice(names, size=int(rng.integers(2, 5)), replace=False).tolist())
    for f in fields(Identity):
        if f.name in redraw:
            d[f.name] = getattr(fresh, f.name)
        elif f.type in (float, "float"):
            # A tenth of the prior's spread: same person at a glance, different on a closer look.
            d[f.name] = float(d[f.name] + rng.normal(0.0, 0.25) * _SPREAD.get(f.name, 0.5))
    return Identity(**d)


_SPREAD = {
    "face_w": 1.8,
    "face_h": 1.8,
    "jaw": 0.3,
    "cheek": 0.6,
    "skin": 0.6,
    "skin_warm": 1.0,
    "eye_dx": 1.0,
    "eye_y": 1.2,
    "eye_w": 0.5,
    "eye_h": 0.35,
    "eye_tilt": 5.0,
    "brow_thick": 0.6,
    "brow_arch": 0.8,
    "brow_tilt": 1.2,
    "brow_gap": 0.9,
    "nose_len": 1.8,
    "nose_w": 0.9,
    "mouth_y": 1.0,
    "mouth_w": 1.5,
    "lip": 0.6,
    "lip_red": 0.3,
    "ear": 0.12,
    "hair_line": 1.8,
    "hair_volume": 1.5,
    "mole_x": 0.3,
    "mole_y": 0.3,
    "mole_r": 0.0,
}


def make_identities(num: int, seed: int, group: int = 0, twin_fraction: float = 0.35) -> list[Identity]:
    """``num`` identities of one group (0 = training, 1 = held-out); about ``twin_fraction`` are near-twins."""
    rng = np.random.default_rng([seed, group, 7919])
    out: list[Identity] = []
    for i in range(num):
        if i > 0 and rng.uniform() < twin_fraction:
            out.append(_twin_of(out[int(rng.integers(0, i))], rng))
        else:
            out.append(_draw_identity(rng))
    return out


# Drawing helpers (coordinates in float px; cv2 gets them with _SHIFT sub-pixel bits).


def _c(v: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ellipse(img, cx, cy, ax, ay, angle, colour, thickness=-1, start=0, end=360):
    cv2.ellipse(
        img, _pt(cx, cy), _pt(max(ax, 0.1), max(ay, 0.1)), angle, start, end, colour, thickness, cv2.LINE_AA, _SHIFT
    )


def _silhouette_ellipse(face, mask, cx, cy, ax, ay, angle, colour):
    """An ellipse that is part of the head's silhouette (drawn into the alpha mask as well)."""
    _ellipse(face, cx, cy, ax, ay, angle, colour)
    _ellipse(mask, cx, cy, ax, ay, angle, 255)


def _poly(img, pts: np.ndarray, colour):
    cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], colour, cv2.LINE_AA, _SHIFT)


def _line(img, pts: np.ndarray, colour, thickness: float):
    t = max(1, int(round(thickness)))
    cv2.polylines(img, [np.round(pts * _ONE).astype(np.int32)], False, colour, t, cv2.LINE_AA, _SHIFT)


class _Head:
    """Cylinder projection of the head under yaw: x offsets on the face surface -> image x."""

    def __init__(self, idt: Identity, yaw: float):
        self.r = idt.face_w * 0.95
        self.s, self.cos = math.sin(yaw), math.cos(yaw)
        self.sil = _OUTLINE_SHIFT * idt.face_w * self.s  # how far the silhouette moves

    def x(self, dx, depth=0.0):
        dx = np.clip(dx, -self.r, self.r)
        z = np.sqrt(np.maximum(self.r**2 - dx**2, 0.0)) + depth
        return CX + dx * self.cos + z * self.s

    def width(self, dx):
        """Local foreshortening of a feature centred at ``dx``."""
        dx = float(np.clip(dx, -self.r * 0.95, self.r * 0.95))
        z = math.sqrt(self.r**2 - dx**2)
        return max(0.25, self.cos - dx / z * self.s)


def _face_outline(idt: Identity, head: _Head, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    lower = np.clip(np.sin(t), 0.0, None)
    w = (
        idt.face_w
        * (1.0 - 0.32 * idt.jaw * lower**2.2)
        * (1.0 + 0.06 * idt.cheek * np.exp(-((np.sin(t) - 0.1) ** 2) / 0.05))
    )
    dx = w * np.cos(t)
    y = CY + idt.face_h * np.sin(t) * np.where(np.sin(t) > 0, 1.0, 0.92)
    # The silhouette of a turning head moves much less than the features on its surface.
    x = CX + dx * (1.0 - 0.12 * np.abs(head.s)) + head.sil
    return np.stack([x, y], 1)


def render_face(
    idt: Identity, rng: np.random.Generator, nuisance: Nuisance = NORMAL, size: int = 112, yaw: float | None = None
) -> np.ndarray:
    """Draw one image of ``idt``: RGB uint8 ``size x size x 3``. All randomness comes from ``rng``."""
    u, n = rng.uniform, rng.normal
    # Per-image nuisance draws.
    yaw = float(u(-nuisance.yaw, nuisance.yaw)) if yaw is None else float(yaw)
    pitch = float(u(-nuisance.pitch, nuisance.pitch))
    smile = float(np.clip(n(0.3, 0.5), -0.6, 1.0))
    mouth_open = float(u(0, 1)) if u() < 0.25 else 0.0
    eye_open = 0.1 if u() < 0.05 else float(u(0.6, 1.15))
    cloth = np.clip(rng.uniform(20, 230, 3), 0, 255)

    F = int(FRAME)
    face = np.zeros((F, F, 3), np.uint8)
    mask = np.zeros((F, F), np.uint8)
    head = _Head(idt, yaw)

    sk = idt.skin
    lo = int(math.floor(sk))
    skin = _SKIN[lo] * (1 - (sk - lo)) + _SKIN[min(lo + 1, len(_SKIN) - 1)] * (sk - lo)
    skin = np.clip(skin + idt.skin_warm * np.array([6.0, 0.0, -6.0]), 0, 255)
    skin_dark = skin * 0.82
    hair = _HAIR[idt.hair_colour]
    hair_dark = hair * 0.7
    style = HAIR_STYLES[idt.hair_style]
    fw, fh = idt.face_w, idt.face_h
    top = CY - fh * 0.92
    vol = idt.hair_volume

    # Hair behind the head (long hair, a bun).
    if style == "long":
        pts = np.array(
            [
                [CX - fw - vol - 2, top + 10],
                [CX - fw - vol - 4, CY + fh + 14],
                [CX + fw + vol + 4, CY + fh + 14],
                [CX + fw + vol + 2, top + 10],
            ],
            np.float64,
        )
        pts[:, 0] += head.sil
        _poly(face, pts, _c(hair_dark))
        _poly(mask, pts, 255)
    if style == "bun":
        _silhouette_ellipse(face, mask, CX + head.sil, top - 5 - vol, 8 + vol * 0.5, 7, 0, _c(hair))

    # Neck and shoulders (clothes vary per image).
    neck = np.array(
        [
            [CX - fw * 0.45, CY + fh * 0.6],
            [CX - fw * 0.5, F + 2],
            [CX + fw * 0.5, F + 2],
            [CX + fw * 0.45, CY + fh * 0.6],
        ]
    )
    _poly(face, neck, _c(skin_dark))
    _poly(mask, neck, 255)
    _silhouette_ellipse(face, mask, CX, F + 12, fw * 1.9, 22, 0, _c(cloth))

    # Ears: the one on the far side of the turn hides behind the face.
    for side in (-1, 1):
        if side * head.s < -0.3:
            continue
        ex = CX + side * fw * (1.0 - 0.12 * abs(head.s)) + head.sil
        _silhouette_ellipse(face, mask, ex, CY - 2, 3.5 * idt.ear, 7 * idt.ear, 0, _c(skin_dark))

    # Face.
    outline = _face_outline(idt, head)
    _poly(face, outline, _c(skin))
    _poly(mask, outline, 255)

    # Beard (under the features so the mouth stays visible).
    nose_y = CY + idt.eye_y + idt.nose_len + pitch
    mouth_y = nose_y + idt.mouth_y
    if idt.beard == 3:
        sel = outline[:, 1] > mouth_y - 6
        pts = np.concatenate([outline[sel], [[head.x(-fw * 0.6), mouth_y - 5], [head.x(fw * 0.6), mouth_y - 5]]])
        hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        _poly(face, hull, _c(hair_dark))
    elif idt.beard == 1:
        sel = outline[:, 1] > mouth_y - 4
        hull = cv2.convexHull(outline[sel].astype(np.float32)).reshape(-1, 2).astype(np.float64)
        _poly(face, hull, _c(skin * 0.6 + hair_dark * 0.4))

    # Hair on top.
    hl = CY + idt.eye_y - idt.hair_line
    if style != "bald":
        t = np.linspace(np.pi, 2 * np.pi, 24)
        rx, ry = fw + vol, (CY - (top - vol - 3))
        cap = np.stack([CX + head.sil + rx * np.cos(t), CY + ry * np.sin(t)], 1)
        side_y = CY - 4 if style in ("long", "side_part", "curly") else CY - 10
        if style == "fringe":
            edge = np.array(
                [[CX + fw + 1, side_y], [CX + fw * 0.8, hl + 4], [CX - fw * 0.8, hl + 4], [CX - fw - 1, side_y]]
            )
        elif style == "side_part":
            edge = np.array(
                [
                    [CX + fw + 1, side_y],
                    [CX + fw * 0.6, hl + 1],
                    [CX - fw * 0.2, hl - 2],
                    [CX - fw * 0.7, hl + 6],
                    [CX - fw - 1, side_y],
                ]
            )
        elif style == "receding":
            edge = np.array(
                [
                    [CX + fw + 1, side_y],
                    [CX + fw * 0.5, hl - 3],
                    [CX + 3, hl + 1],
                    [CX - 3, hl + 1],
                    [CX - fw * 0.5, hl - 3],
                    [CX - fw - 1, side_y],
                ]
            )
        else:
            edge = np.array(
                [
                    [CX + fw + 1, side_y],
                    [CX + fw * 0.7, hl + 1],
                    [CX, hl - 1],
                    [CX - fw * 0.7, hl + 1],
                    [CX - fw - 1, side_y],
                ]
            )
        edge[:, 0] = CX + (edge[:, 0] - CX) * (1 - 0.12 * abs(head.s)) + head.sil
        pts = np.concatenate([cap, edge])
        _poly(face, pts, _c(hair))
        _poly(mask, cap, 255)
        if style == "curly":
            for k in range(14):
                a = np.pi + np.pi * k / 13
                cx_, cy_ = CX + head.sil + rx * math.cos(a), CY + ry * math.sin(a)
                _silhouette_ellipse(face, mask, cx_, cy_, 3.5, 3.5, 0, _c(hair_dark))
    else:
        # Bald: a band of short hair above the ears.
        for side in (-1, 1):
            _ellipse(face, CX + side * fw * 0.92 + head.sil, CY - 8, 3, 9, 0, _c(hair_dark))

    # Eyes.
    ey = CY + idt.eye_y + pitch
    iris = _IRIS[idt.iris]
    for side in (-1, 1):
        dx = side * idt.eye_dx
        ex, k = head.x(dx, 0.0), head.width(dx)
        if k < 0.3:
            continue
        w, h = idt.eye_w * k, idt.eye_h * eye_open
        ang = -side * idt.eye_tilt
        _ellipse(face, ex, ey, w, max(h, 0.5), ang, (245, 242, 236))
        if eye_open > 0.3:
            ix = ex + 1.2 * head.s
            _ellipse(face, ix, ey, min(idt.eye_h * 0.95, w * 0.55) * 1.0, min(h, idt.eye_h * 0.95), 0, _c(iris))
            _ellipse(face, ix, ey, 0.9, 0.9, 0, (15, 12, 12))
        # Upper lid line.
        _ellipse(face, ex, ey, w + 0.3, max(h, 0.5) + 0.2, ang, _c(skin * 0.45), 1, 180, 360)
        # Brows.
        bx = np.linspace(-1.0, 1.0, 7)
        # bx * side runs from the inner end (-1) to the outer end (+1) of each brow.
        by = ey - idt.eye_h - idt.brow_gap - idt.brow_arch * (1 - bx**2) - (bx * side) * idt.brow_tilt * 0.5
        bdx = dx + bx * idt.eye_w * 1.3
        pts = np.stack([head.x(bdx), by], 1)
        _line(face, pts, _c(hair_dark * 0.8), idt.brow_thick * (0.8 + 0.2 * k))

    # Glasses.
    if idt.glasses:
        g = (25, 25, 30)
        centres = []
        for side in (-1, 1):
            dx = side * idt.eye_dx
            k = head.width(dx)
            ex = head.x(dx, 1.5)
            centres.append(ex)
            if idt.glasses == 1:
                _ellipse(face, ex, ey, 6.5 * k, 5.5, 0, g, 1)
            else:
                pts = np.array(
                    [
                        [ex - 7 * k, ey - 4.5],
                        [ex + 7 * k, ey - 4.5],
                        [ex + 7 * k, ey + 4.5],
                        [ex - 7 * k, ey + 4.5],
                        [ex - 7 * k, ey - 4.5],
                    ]
                )
                _line(face, pts, g, 1)
        _line(
            face,
            np.array(
                [[centres[0] + 6 * head.width(-idt.eye_dx), ey - 1], [centres[1] - 6 * head.width(idt.eye_dx), ey - 1]]
            ),
            g,
            1,
        )

    # Nose: bridge line, tip shadow and nostrils; the tip stands out, so it moves most under yaw.
    tip = head.x(0.0, 4.0 + idt.nose_len * 0.2)
    bridge = np.array([[head.x(-1.5, 1.0), ey + 1], [tip, nose_y - 2]])
    _line(face, bridge, _c(skin * 0.78), 1)
    _ellipse(face, tip, nose_y - 0.5, idt.nose_w * 0.8, 2.2, 0, _c(skin * 0.9))
    for side in (-1, 1):
        _ellipse(
            face, tip + side * idt.nose_w * 0.55 * head.width(side * 3), nose_y + 0.6, 1.3, 0.8, 0, _c(skin * 0.45)
        )

    # Mouth: width shrinks with the turn, corners lift with the smile, it opens for some images.
    mx, mk = head.x(0.0, 2.0), head.width(0.0)
    mw = idt.mouth_w * mk * (1.0 + 0.12 * smile)
    xs = np.linspace(-1, 1, 11)
    curve = -smile * 2.2 * (xs**2 - 0.3)
    lip_col = np.clip(skin * (1 - 0.35 * idt.lip_red) + np.array([170, 60, 70]) * 0.35 * idt.lip_red, 0, 255) * 0.85
    upper = np.stack([mx + xs * mw, mouth_y + curve - idt.lip * 0.6], 1)
    lower = np.stack([mx + xs[::-1] * mw, mouth_y + curve[::-1] + idt.lip * 0.8 + mouth_open * 4], 1)
    _poly(face, np.concatenate([upper, lower]), _c(lip_col))
    if mouth_open > 0.15:
        inner_u = np.stack([mx + xs * mw * 0.8, mouth_y + curve * 0.8], 1)
        inner_l = np.stack([mx + xs[::-1] * mw * 0.8, mouth_y + curve[::-1] * 0.8 + mouth_open * 3.5], 1)
        _poly(face, np.concatenate([inner_u, inner_l]), (40, 20, 20))
        _line(face, inner_u + [0, 0.6], (235, 232, 225), 1)
    else:
        _line(face, np.stack([mx + xs * mw, mouth_y + curve], 1), _c(lip_col * 0.5), 1)
    if idt.beard == 2:
        pts = np.array(
            [
                [mx - mw - 1, mouth_y + 1],
                [mx - mw * 0.6, mouth_y - 3.5],
                [mx + mw * 0.6, mouth_y - 3.5],
                [mx + mw + 1, mouth_y + 1],
                [mx + mw * 0.5, mouth_y - 1.6],
                [mx - mw * 0.5, mouth_y - 1.6],
            ]
        )
        _poly(face, pts, _c(hair_dark))

    if idt.mole_r > 0:
        _ellipse(
            face,
            head.x(idt.mole_x * fw * 0.75),
            CY + idt.mole_y * fh * 0.6 + pitch,
            idt.mole_r,
            idt.mole_r,
            0,
            _c(skin * 0.4),
        )

    return _photograph(face, mask, rng, nuisance, size, cloth)


def _photograph(
    face: np.ndarray, mask: np.ndarray, rng: np.random.Generator, nz: Nuisance, size: int, cloth: np.ndarray
) -> np.ndarray:
    """Place the drawn head in a frame: roll/scale/shift, background, lighting, noise, blur, JPEG."""
    u = rng.uniform
    k = size / FRAME
    ang = float(u(-nz.roll, nz.roll))
    sc = float(1.0 + u(-nz.scale, nz.scale)) * k * ZOOM
    M = cv2.getRotationMatrix2D((CX, CY), ang, sc)
    # Map the face centre to its place in an aligned crop (eyes near y = 50, chin near the bottom).
    M[:, 2] += np.array([size / 2.0, (CY + 2.0) * k]) - np.array([CX, CY]) + rng.uniform(-nz.shift, nz.shift, 2) * k
    face_w = cv2.warpAffine(face, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, M, (size, size), flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0

    # Background: a colour, a smooth texture and a gradient, all per image.
    base = (rng.uniform(30, 225) * 0.5 + rng.uniform(30, 225, 3) * 0.5).astype(np.float32)  # muted colours
    tex = cv2.resize(rng.normal(0.0, 1.0, (4, 4, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    bg = base + tex * float(u(5, 30))
    img = face_w.astype(np.float32) * alpha + bg * (1.0 - alpha)

    # Lighting: a directional gain across the image, then brightness / contrast.
    theta = float(u(0, 2 * np.pi))
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    ramp = math.cos(theta) * g[None, :] + math.sin(theta) * g[:, None]
    img *= (1.0 + float(u(0, nz.light)) * ramp)[..., None]
    img = (
        (img - 128.0) * float(1.0 + u(-nz.contrast, nz.contrast))
        + 128.0
        + 255.0 * float(u(-nz.brightness, nz.brightness))
    )
    sigma = float(u(0, nz.blur))
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.normal(0.0, float(u(0, nz.noise)), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if u() < 0.5:
        q = int(rng.integers(nz.jpeg_min, 91))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


# The dataset.

TRAIN_GROUP, TEST_GROUP = 0, 1
BINS = {"toy_lfw": (NORMAL, False), "toy_cfp_fp": (STRONG, True)}  # name -> (nuisance, frontal-vs-turned pairs)


def _pair_images(
    ids: list[Identity], i: int, seed: int, stream: int, nuisance: Nuisance, frontal_profile: bool, size: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pair ``i`` of a verification file: even pairs are the same identity, odd pairs two different ones.

    Alternating keeps every one of the protocol's 10 unshuffled folds balanced.
    """
    rng = np.random.default_rng([seed, stream, i])
    same = i % 2 == 0
    a = int(rng.integers(len(ids)))
    b = a if same else int((a + rng.integers(1, len(ids))) % len(ids))
    if frontal_profile:
        # CFP-FP pairs a frontal image with a strongly turned one.
        yaw_a = float(rng.uniform(-0.1, 0.1))
        yaw_b = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.55 * nuisance.yaw, nuisance.yaw))
    else:
        yaw_a = yaw_b = None
    img_a = render_face(ids[a], np.random.default_rng([seed, stream, i, 0]), nuisance, size, yaw=yaw_a)
    img_b = render_face(ids[b], np.random.default_rng([seed, stream, i, 1]), nuisance, size, yaw=yaw_b)
    return img_a, img_b, same


def write_toy_dataset(
    out_dir: str | os.PathLike,
    *,
    num_identities: int = 40,
    images_per_identity: int = 12,
    num_test_identities: int = 20,
    num_pairs: int = 300,
    seed: int = 0,
    size: int = 112,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the toy dataset to ``out_dir`` and return a summary (also written as ``toy_meta.json``).

    Training identities get labels ``0 .. num_identities-1``; the verification files use a separate
    group of ``num_test_identities`` held-out identities. ``toy_meta.json`` is written last, so its
    presence means the folder is complete.
    """
    from tqdm import tqdm

    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.recordio import FaceRecWriter, encode_jpeg
    from scoremix_plugin.verification.binfile import write_bin

    for name, v in (
        ("num_identities", num_identities),
        ("images_per_identity", images_per_identity),
        ("num_pairs", num_pairs),
        ("size", size),
    ):
        if int(v) < 1:
            raise InputError(f"write_toy_dataset: {name} must be >= 1, got {v}")
    if num_test_identities < 2:
        raise InputError(
            f"write_toy_dataset: num_test_identities must be >= 2 (different pairs), got {num_test_identities}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_ids = make_identities(num_identities, seed, TRAIN_GROUP)
    test_ids = make_identities(num_test_identities, seed, TEST_GROUP)
    total = num_identities * images_per_identity + len(BINS) * 2 * num_pairs
    bar = tqdm(total=total, desc="toy-data", unit="img", disable=not progress)

    with FaceRecWriter(out, num_classes=num_identities, image_size=size) as writer:
        for label, idt in enumerate(train_ids):
            for j in range(images_per_identity):
                writer.write(
                    render_face(idt, np.random.default_rng([seed, TRAIN_GROUP, label, j]), NORMAL, size), label
                )
                bar.update(1)

    bins = {}
    for stream, (name, (nuisance, frontal_profile)) in enumerate(BINS.items(), start=2):
        images, issame = [], []
        for i in range(num_pairs):
            a, b, same = _pair_images(test_ids, i, seed, stream, nuisance, frontal_profile, size)
            images += [encode_jpeg(a), encode_jpeg(b)]
            issame.append(same)
            bar.update(2)
        write_bin(out / f"{name}.bin", images, issame)
        bins[name] = {"file": f"{name}.bin", "pairs": num_pairs, "same": int(sum(issame))}
    bar.close()

    summary = {
        "format": "scoremix-toy/1",
        "seed": int(seed),
        "size": int(size),
        "train": {
            "rec": "train.rec",
            "num_classes": num_identities,
            "num_image": num_identities * images_per_identity,
            "images_per_identity": images_per_identity,
        },
        "test": {"num_identities": num_test_identities, "bins": bins},
        "nuisance": {"train": asdict(NORMAL), **{name: asdict(nz) for name, (nz, _) in BINS.items()}},
        "identity_fields": [f.name for f in fields(Identity)],
        "train_identities": [idt.vector() for idt in train_ids],
        "test_identities": [idt.vector() for idt in test_ids],
    }
    write_json_atomic(out / "toy_meta.json", summary)
    return summary


# Fingerprint: what a generator trained on a toy folder depends on.

# Bump when the renderer's output changes on purpose (drawing, identity prior, nuisance presets): every
# generator shipped for the toy data records the version and the fingerprint it was trained on.
RENDERER_VERSION = 1


def toy_fingerprint(*, num_identities: int, images_per_identity: int, seed: int = 0, size: int = 112) -> dict[str, Any]:
    """The training half of a toy folder in a few hundred bytes: settings, and sha256 of the identity vectors
    and of the pixels of two rendered images per identity (the first and the last).

    A generator learns the training images, so this is what must not change under a shipped one; the
    verification pairs (test identities, pair count) are drawn from another group and do not enter. Pixels,
    not JPEG bytes: the encoder's version must not make shipped weights look stale.
    """
    import hashlib

    ids = make_identities(num_identities, seed, TRAIN_GROUP)
    vec = hashlib.sha256(np.asarray([idt.vector() for idt in ids], np.float64).tobytes()).hexdigest()
    pix = hashlib.sha256()
    for label, idt in enumerate(ids):
        for j in sorted({0, images_per_identity - 1}):
            img = render_face(idt, np.random.default_rng([seed, TRAIN_GROUP, label, j]), NORMAL, size)
            pix.update(np.ascontiguousarray(img).tobytes())
    return {
        "renderer_version": RENDERER_VERSION,
        "identities": int(num_identities),
        "images_per_identity": int(images_per_identity),
        "seed": int(seed),
        "size": int(size),
        "identities_sha256": vec,
        "images_sha256": pix.hexdigest(),
    }


# CLI.


def add_toy_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output folder (train.rec/.idx, property, toy_*.bin, toy_meta.json)"
    )
    parser.add_argument("--identities", type=int, default=40, help="training identities (labels 0..N-1)")
    parser.add_argument("--images-per-identity", type=int, default=12)
    parser.add_argument("--test-identities", type=int, default=20, help="held-out identities for the .bin files")
    parser.add_argument("--pairs", type=int, default=300, help="pairs per verification file (half same)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=112, help="image side in pixels")
    parser.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds files")


def run_toy_data(args: argparse.Namespace) -> int:
    from scoremix_plugin.io_utils import refuse_existing_output

    for flag, value, low in (
        ("--identities", args.identities, 1),
        ("--images-per-identity", args.images_per_identity, 1),
        ("--test-identities", args.test_identities, 2),
        ("--pairs", args.pairs, 1),
        ("--size", args.size, 1),
    ):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if not args.overwrite:
        refuse_existing_output(
            args.out, ("*",), hint="pass --overwrite to write the toy dataset over them, or choose an empty folder"
        )
    s = write_toy_dataset(
        args.out,
        num_identities=args.identities,
        images_per_identity=args.images_per_identity,
        num_test_identities=args.test_identities,
        num_pairs=args.pairs,
        seed=args.seed,
        size=args.size,
        progress=True,
    )
    print(
        f"{args.out}: {s['train']['num_image']} images of {s['train']['num_classes']} identities; "
        + ", ".join(f"{k}.bin ({v['pairs']} pairs)" for k, v in s["test"]["bins"].items())
    )
    return 0
