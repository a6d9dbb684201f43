"""The three LatentSync alignment anchors from MediaPipe's 478-point face mesh.

The official path (SPEC §4.2) takes InsightFace ``2d106det`` landmarks (a non-commercial model we cannot ship):

====================  ===================================  =================================================
anchor                InsightFace 106 (official)            MediaPipe face mesh (this module)
====================  ===================================  =================================================
left  (image left)    mean of 43, 48, 49, 51, 50            mean of 70, 63, 105, 66, 107 (upper arc) and
                      — 5 points of the image-left brow      46, 53, 52, 65, 55 (lower arc) of that brow
right (image right)   mean of 101..105                      mean of 336, 296, 334, 293, 300 and
                      — 5 points of the image-right brow     285, 295, 282, 283, 276 of that brow
nose                  mean of 74, 77, 83, 86                mean of 195 and 5: the nose midline below
                      — 4 points of the nose region          the bridge, above the tip
====================  ===================================  =================================================

Brows: the 106-point subsets cover one brow each; we take the whole brow outline (10 points), whose mean is
the brow's centre — at most half a brow thickness (≈ 1–2 % of the face height) from a 5-point arc mean.
Nose: the official template puts the nose anchor ``20/41`` of the brow-to-brow distance below the brows'
midpoint (template ``[[17, 20], [58, 20], [37.5, 40]]``). Measured on the astronaut and Grace Hopper portraits,
mesh points 195 and 5 sit at 19.6 / 23.6 and 18.7 / 22.8 template units below the brows, so their mean lands
within ~1.5 units of the template nose; the tip (1) is at ~32, the bridge (6) at ~11. The picture
``docs/faces/anchors.png`` (made by ``python -m lipline.models.face.anchors docs/faces/anchors.png``) draws the
points, their means and the template-implied nose position on the astronaut.

Anchors are rounded half-to-even (``np.round``), like the official code.
"""

from __future__ import annotations

import numpy as np

LEFT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)  # image-left brow (the subject's right)
RIGHT_BROW = (336, 296, 334, 293, 300, 285, 295, 282, 283, 276)  # image-right brow (the subject's left)
NOSE = (195, 5)
ANCHOR_GROUPS = (LEFT_BROW, RIGHT_BROW, NOSE)

# Official template (SPEC §4.3), at R = 256 × ratio; used for checks and the picture.
TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])


def anchors_from_mesh(points: np.ndarray) -> np.ndarray:
    """(478, 2) or (n, 478, 2) mesh points in pixels → (3, 2) or (n, 3, 2) float64 anchors (left brow,
    right brow, nose), each the mean of its group, rounded half-to-even."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-2:] != (478, 2):
        raise ValueError(f"expected (..., 478, 2) face-mesh points, got shape {pts.shape}")
    means = [pts[..., list(group), :].mean(axis=-2) for group in ANCHOR_GROUPS]
    return np.round(np.stack(means, axis=-2))


def template_offset(points: np.ndarray) -> float:
    """How far below the brows' midpoint the nose anchor lies, in template units (official template: 20).

    points: (478, 2) mesh points. Computed from the unrounded group means."""
    pts = np.asarray(points, dtype=np.float64)
    left, right, nose = (pts[list(g)].mean(axis=0) for g in ANCHOR_GROUPS)
    across = right - left
    down = np.array([-across[1], across[0]]) / np.linalg.norm(across)
    return float(np.dot(nose - (left + right) / 2, down) / np.linalg.norm(across) * (TEMPLATE[1, 0] - TEMPLATE[0, 0]))


def draw_anchor_picture(rgb: np.ndarray, points: np.ndarray, path: str, zoom: float = 4.0) -> None:
    """Write a PNG of the face with the mesh points used, the three anchors and the template-implied nose.

    rgb: (H, W, 3) uint8; points: (478, 2) mesh points of the face in ``rgb``."""
    import cv2

    pts = np.asarray(points, dtype=np.float64)
    lo = np.maximum(pts.min(axis=0) - 20, 0).astype(int)
    hi = np.minimum(pts.max(axis=0) + 20, [rgb.shape[1], rgb.shape[0]]).astype(int)
    crop = rgb[lo[1]:hi[1], lo[0]:hi[0]]
    img = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    to_px = lambda p: tuple(int(v) for v in np.round((np.asarray(p) - lo) * zoom))  # noqa: E731
    for p in pts:
        cv2.circle(img, to_px(p), 1, (200, 200, 200), -1, cv2.LINE_AA)
    colours = ((0, 200, 255), (255, 160, 0), (60, 220, 60))
    names = ("left brow: mesh 70,63,105,66,107 + 46,53,52,65,55 (106: 43,48,49,51,50)",
             "right brow: mesh 336,296,334,293,300 + 285,295,282,283,276 (106: 101-105)",
             "nose: mesh 195,5 (106: 74,77,83,86)")
    anchors = anchors_from_mesh(pts)
    for group, colour, anchor in zip(ANCHOR_GROUPS, colours, anchors):
        for i in group:
            cv2.circle(img, to_px(pts[i]), 4, colour, -1, cv2.LINE_AA)
        cv2.drawMarker(img, to_px(anchor), (0, 0, 255), cv2.MARKER_CROSS, 22, 3)
    left, right = anchors[0], anchors[1]
    across = right - left
    implied = (left + right) / 2 + np.array([-across[1], across[0]]) * (20.0 / 41.0)
    cv2.drawMarker(img, to_px(implied), (255, 0, 255), cv2.MARKER_DIAMOND, 18, 2)
    legend = [*names, "red +: anchors (rounded means); magenta: nose position implied by the official template"]
    pad = 22 * len(legend) + 10
    canvas = np.full((img.shape[0] + pad, max(img.shape[1], 820), 3), 255, np.uint8)
    canvas[:img.shape[0], :img.shape[1]] = img
    for k, (text, colour) in enumerate(zip(legend, (*colours, (0, 0, 255)))):
        cv2.putText(canvas, text, (8, img.shape[0] + 22 * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    cv2.imwrite(path, canvas)


if __name__ == "__main__":  # python -m lipline.models.face.anchors docs/faces/anchors.png
    import sys

    from skimage import data

    from lipline.models.face.detect import FaceAnalyzer

    image = data.astronaut()
    with FaceAnalyzer() as analyzer:
        face = analyzer.detect(image)[0]
        mesh = analyzer.landmarks(image, face.box)
    draw_anchor_picture(image, mesh.points, sys.argv[1] if len(sys.argv) > 1 else "anchors.png")
