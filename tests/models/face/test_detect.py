"""Detector, landmarks, usability rules and the mesh → official-anchor mapping, on public-domain portraits."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from lipline.models.face.anchors import TEMPLATE, anchors_from_mesh, template_offset
from lipline.models.face.detect import Box, FaceAnalyzer, FaceLandmarks, face_problem
from tests.models.face.clips import portrait

LIPS_CENTRE = (13, 14)  # inner upper / lower lip midpoints of the 478-point mesh
IRISES = (468, 473)


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


def _padded(name: str) -> np.ndarray:
    """The portrait on a grey canvas (so its face is not cut at the picture's edge)."""
    p = portrait(name).rgb
    return np.ascontiguousarray(cv2.copyMakeBorder(p, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(100, 100, 100)))


@pytest.mark.parametrize("name", ["astronaut", "grace"])
def test_one_face_found_with_landmarks_inside_its_box(analyzer, name):
    rgb = _padded(name)
    faces = analyzer.detect(rgb)
    assert len(faces) == 1 and faces[0].score >= 0.8
    fx, fy, fw, fh = portrait(name).face
    assert faces[0].box.iou(Box(fx + 60, fy + 60, fw, fh)) > 0.6
    analyzer.reset_tracking()
    mesh = analyzer.landmarks(rgb, faces[0].box)
    assert mesh.points.shape == (478, 2) and mesh.points.dtype == np.float32
    assert mesh.box.iou(faces[0].box) > 0.5
    assert abs(mesh.yaw_deg) < 15  # both portraits look into the camera
    assert face_problem(mesh) is None


@pytest.mark.parametrize("name", ["cat", "coffee"])
def test_no_face_on_cat_and_coffee(analyzer, name):
    assert analyzer.detect(portrait(name).rgb) == []


def test_landmarks_are_in_frame_pixels_at_1080p(analyzer):
    """The mesh runs on a 256-px region; points must map back to the full-size frame."""
    small = _padded("astronaut")
    big = np.zeros((1080, 1920, 3), np.uint8)
    big[200:200 + small.shape[0] * 2, 900:900 + small.shape[1] * 2] = cv2.resize(small, None, fx=2, fy=2)
    analyzer.reset_tracking()
    ref = analyzer.landmarks(small, analyzer.detect(small)[0].box)
    analyzer.reset_tracking()
    got = analyzer.landmarks(big, analyzer.detect(big)[0].box)
    expected = ref.points * 2 + np.array([900, 200], np.float32)
    assert np.median(np.abs(got.points - expected)) < 2.0


def test_too_small_and_too_turned_rules():
    pts = np.random.default_rng(0).uniform(0, 40, (478, 2)).astype(np.float32)
    small = FaceLandmarks(points=pts, depth=np.zeros(478, np.float32), yaw_deg=0.0)
    assert face_problem(small) == "too small"
    big = FaceLandmarks(points=pts * 3, depth=np.zeros(478, np.float32), yaw_deg=0.0)
    assert face_problem(big) is None
    turned = FaceLandmarks(points=pts * 3, depth=np.zeros(478, np.float32), yaw_deg=-65.0)
    assert face_problem(turned) == "too turned"


def test_anchors_round_half_to_even():
    pts = np.zeros((478, 2))
    pts[195] = (10.0, 0.0)
    pts[5] = (11.0, 1.0)  # nose mean (10.5, 0.5) → (10, 0)
    pts[[70, 63]] = (2.0, 4.0)
    pts[[336, 296]] = (6.0, 8.0)  # brow means: 2 of 10 points at the value → 0.4 / 1.2 / 0.8 / 1.6
    anchors = anchors_from_mesh(pts)
    assert anchors.dtype == np.float64 and anchors.shape == (3, 2)
    np.testing.assert_array_equal(anchors, [[0, 1], [1, 2], [10, 0]])
    assert anchors_from_mesh(np.stack([pts, pts])).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="478"):
        anchors_from_mesh(np.zeros((106, 2)))


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """SPEC §4.3 similarity (centre, unbiased std, SVD rotation), without smoothing. (3,2),(3,2) → (2,3)."""
    cs, cd = src.mean(0), dst.mean(0)
    s1, s2 = np.std(src - cs, ddof=1), np.std(dst - cd, ddof=1)
    sn, dn = (src - cs) / s1, (dst - cd) / s2
    u, _, vt = np.linalg.svd(sn.T @ dn)
    r = vt.T @ u.T
    if np.linalg.det(r) < 0:
        vt[-1] *= -1
        r = vt.T @ u.T
    a = s2 / s1 * r
    return np.hstack([a, (cd - a @ cs)[:, None]])


@pytest.mark.parametrize("name", ["astronaut", "grace"])
def test_mesh_anchors_give_an_official_looking_crop(analyzer, name):
    """With the three anchors mapped onto the official template (R = 256: ratio 2.8, crop 210×280), the eyes
    land in the upper part of the crop (between brow line and nose anchor) and the mouth below the nose anchor,
    inside the crop; the nose anchor sits ~20 template units below the brows, as in the template."""
    rgb = _padded(name)
    analyzer.reset_tracking()
    mesh = analyzer.landmarks(rgb, analyzer.detect(rgb)[0].box)
    ratio = 2.8
    template = TEMPLATE * ratio
    m = _similarity(anchors_from_mesh(mesh.points), template)
    crop = mesh.points.astype(np.float64) @ m[:, :2].T + m[:, 2]
    eyes, mouth = crop[list(IRISES)], crop[list(LIPS_CENTRE)].mean(0)
    brow_y, nose_y = template[0, 1], template[2, 1]
    assert np.all((eyes[:, 1] > brow_y) & (eyes[:, 1] < nose_y)), eyes
    assert eyes[0, 0] < 105 < eyes[1, 0]
    assert nose_y + 20 < mouth[1] < 280 - 40, mouth
    assert abs(mouth[0] - 105) < 10
    assert abs(template_offset(mesh.points) - 20.0) < 2.5


def test_detect_module_does_not_import_torch():
    code = ("import sys; from lipline.models.face import detect, track, anchors; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
