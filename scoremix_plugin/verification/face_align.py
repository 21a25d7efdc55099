"""Face alignment for recognisers: 5 landmarks -> the ArcFace 112x112 crop, as arcface_torch's IJB evaluation.

    from scoremix_plugin.verification.face_align import align_face   # also verification.ijb.align_face
    crop_chw_rgb, matrix = align_face(cv2.imread("photo.jpg"), landmarks5)   # landmarks in image pixels

Pixel for pixel the crops the host feeds its network in ``eval_ijbc.py`` (scikit-image similarity fit,
``cv2.warpAffine`` of OpenCV 4), whatever OpenCV version is installed; also a way to build aligned
training images from photos and detector landmarks.
"""

from __future__ import annotations

import numpy as np

from scoremix_plugin.errors import InputError

IMAGE_SIZE = 112


def arcface_template() -> np.ndarray:
    """The five ArcFace reference points of a 112x112 crop, shifted 8 px right as the IJB evaluation does.

    float32 like the host's table: the fit below runs in float32 as the host's did.
    """
    pts = np.array(
        [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
        dtype=np.float32,
    )
    pts[:, 0] += 8.0
    return pts


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking ``src`` to ``dst``.

    Umeyama's solution (PAMI 1991, eqs. 38-43), the one scikit-image's ``SimilarityTransform.estimate``
    computes. Points are taken as float32 and the fit runs in float32 up to the scale, which is float64:
    exactly the precision of the host's transforms (float32 landmarks, scikit-image 0.21 on numpy 1.x).
    The warp below rounds source coordinates to 1/32 px, so even 1e-5 in the matrix moves edge pixels by
    several grey levels. Returns [2, 3] float64.
    """
    src = np.asarray(src, dtype=np.float32)
    dst = np.asarray(dst, dtype=np.float32)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise InputError(f"need two [K, 2] point sets of the same shape (K >= 2), got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputError(f"landmarks {src.tolist()} are not finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / src.shape[0]  # eq. 38
    u, sigma, vt = np.linalg.svd(cov)
    if not sigma[0] > 0:
        raise InputError(f"landmarks {src.tolist()} are degenerate (all at one point): no transform fits them")
    # eqs. 39-43: flip the last axis when that is what keeps the rotation proper (det +1).
    collinear = sigma[1] <= sigma[0] * 2 * np.finfo(np.float64).eps
    if collinear:
        flip = np.linalg.det(u) * np.linalg.det(vt) < 0
    else:
        flip = np.linalg.det(cov) < 0
    signs = np.array([1.0, -1.0 if flip else 1.0])
    rotation = u @ np.diag(signs) @ vt  # float64 from here, as the host's
    scale = 1.0 / np.float64(src_c.var(axis=0).sum()) * (sigma @ signs)
    matrix = np.empty((2, 3))
    matrix[:, 2] = dst_mean - scale * (rotation @ src_mean)
    matrix[:, :2] = scale * rotation
    return matrix


def _remap_maps(matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point source coordinates of every crop pixel, as OpenCV 4's ``warpAffine`` computes them.

    OpenCV <= 4 (the host's) inverts the matrix, steps through the crop in 1/1024 px (rounded half to
    even), and keeps 5 fractional bits, i.e. a 32x32 table of bilinear weights; OpenCV 5 interpolates in
    float and gives other pixels. Building these maps and calling ``cv2.remap`` gives the host's crops on
    either version. Returns (integer coordinates int16 [size, size, 2], table index uint16 [size, size]).
    """
    m = np.asarray(matrix, dtype=np.float64).ravel().copy()
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    m[0], m[4] = m[4] * det, m[0] * det
    m[1], m[3] = -m[1] * det, -m[3] * det
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    ab_scale, round_delta = 1024, 1024 // 32 // 2
    steps = np.arange(size, dtype=np.float64)
    x = (
        np.rint((m[1] * steps + m[2]) * ab_scale).astype(np.int64)[:, None]
        + round_delta
        + np.rint(m[0] * steps * ab_scale).astype(np.int64)[None, :]
    ) >> 5
    y = (
        np.rint((m[4] * steps + m[5]) * ab_scale).astype(np.int64)[:, None]
        + round_delta
        + np.rint(m[3] * steps * ab_scale).astype(np.int64)[None, :]
    ) >> 5
    coords = np.stack([x >> 5, y >> 5], axis=-1)
    if np.abs(coords).max() > np.iinfo(np.int16).max:
        raise InputError(f"transform {matrix.tolist()} maps the crop outside any image (coordinates beyond int16)")
    return coords.astype(np.int16), ((y & 31) * 32 + (x & 31)).astype(np.uint16)


def _five_points(landmarks: np.ndarray) -> np.ndarray:
    lmk = np.asarray(landmarks, dtype=np.float64)
    if lmk.shape == (10,):
        lmk = lmk.reshape(5, 2)
    if lmk.shape == (68, 2):  # the 68-point layout: eye centres, nose tip, mouth corners
        lmk = np.stack([(lmk[36] + lmk[39]) / 2, (lmk[42] + lmk[45]) / 2, lmk[30], lmk[48], lmk[54]])
    if lmk.shape != (5, 2):
        raise InputError(f"landmarks must be [5, 2] (or [68, 2]), got shape {np.shape(landmarks)}")
    return lmk


def align_face(img_bgr: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ArcFace crop of a BGR image: (RGB uint8 [3, 112, 112], transform [2, 3] image -> crop).

    Bilinear with a zero border, pixel for pixel what the host's ``cv2.warpAffine`` (OpenCV 4) gives.
    """
    import cv2

    img = np.asarray(img_bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
        raise InputError(f"image must be BGR uint8 [H, W, 3], got {img.dtype} {img.shape}")
    matrix = similarity_transform(_five_points(landmarks5), arcface_template())
    coords, table = _remap_maps(matrix, IMAGE_SIZE)
    crop = cv2.remap(img, coords, table, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)), matrix
