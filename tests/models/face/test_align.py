"""Official LatentSync alignment and paste-back (SPEC 4.2-4.4, 9.3) against the golden vectors, plus the ROI
shortcut of `paste_back` against a full-frame computation."""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipline.models.face.align import (
    AffineSmoother,
    CropGeometry,
    align_face,
    anchors_from_landmarks106,
    face_region,
    paste_back,
    warp_crop,
)
from lipline.models.face.align import _paste_region


@pytest.fixture(scope="module")
def golden(conformance_dir):
    from safetensors.numpy import load_file

    return load_file(str(conformance_dir / "face_align_golden.safetensors"))


def gen_face(golden) -> np.ndarray:
    """The generated face the golden paste-back used (manifest): (3, 256, 256) float32 in [-0.8, 0.8]."""
    return (golden["face256_frame0"].astype(np.float32) / 127.5 - 1.0) * 0.8


def assert_uint8_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Manifest tolerance for uint8 images: max |diff| <= 1 and < 0.1 % of values differing."""
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"max |diff| {diff.max()}"
    assert (diff > 0).mean() < 1e-3, f"{(diff > 0).mean():.4%} of values differ"


def reference_paste_back(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """SPEC 9.3 literally, on the full frame, with kornia's warps (as the official `AlignRestore.restore_img`)."""
    h, w = frame.shape[:2]
    crop_w, crop_h = geometry.crop_size
    fill = torch.full((3,), 127.0)
    inv = kornia.geometry.transform.invert_affine_transform(torch.from_numpy(matrix)[None])
    face_t = F.interpolate(torch.from_numpy(face)[None], size=(crop_h, crop_w), mode="bicubic", antialias=True)
    inv_face = kornia.geometry.transform.warp_affine(face_t, inv, (h, w), padding_mode="fill", fill_value=fill)[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    inv_mask = kornia.geometry.transform.warp_affine(torch.ones(1, 1, crop_h, crop_w), inv, (h, w), padding_mode="zeros")
    mask_e = kornia.morphology.erosion(inv_mask, torch.ones(2, 2))
    w_edge = int(float(mask_e.sum()) ** 0.5) // 20
    center = cv2.erode(mask_e[0, 0].numpy(), np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    k = 2 * w_edge + 1
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    soft = kornia.filters.gaussian_blur2d(torch.from_numpy(center)[None, None], (k, k), (sigma, sigma))[0]
    img = torch.from_numpy(frame).permute(2, 0, 1).float()
    return (soft * mask_e[0] * inv_face + (1 - soft) * img).permute(1, 2, 0).to(torch.uint8).numpy()


def test_geometry():
    g256, g512 = CropGeometry(256), CropGeometry(512)
    assert g256.crop_size == (210, 280) and g512.crop_size == (420, 560)
    np.testing.assert_allclose(g256.template, [[47.6, 56.0], [162.4, 56.0], [105.0, 112.0]], rtol=1e-6)
    assert g512.template.dtype == np.float32 and g512.template.shape == (3, 2)
    np.testing.assert_allclose(g512.template, 2 * g256.template, rtol=1e-6)
    with pytest.raises(ValueError):
        CropGeometry(0)


def test_anchors_match_golden(golden):
    for i in range(4):
        anchors = anchors_from_landmarks106(golden["landmarks106"][i])
        assert anchors.dtype == np.float64
        np.testing.assert_array_equal(anchors, golden["landmarks3"][i])


def test_anchors_round_half_to_even():
    lm = np.zeros((106, 2))
    lm[[74, 77, 83, 86], 0] = [10, 11, 10, 11]  # nose x mean 10.5 -> 10
    lm[[74, 77, 83, 86], 1] = [11, 12, 11, 12]  # nose y mean 11.5 -> 12
    assert anchors_from_landmarks106(lm)[2].tolist() == [10.0, 12.0]
    with pytest.raises(ValueError):
        anchors_from_landmarks106(lm[:68])


def test_smoothed_matrices_and_bias_match_golden(golden):
    smoother = AffineSmoother(CropGeometry(256))
    for i in range(4):
        matrix = smoother.estimate(golden["landmarks3"][i])
        assert matrix.dtype == np.float32 and matrix.shape == (2, 3)
        np.testing.assert_allclose(matrix, golden["affine_matrix"][i], rtol=0, atol=1e-4)
        np.testing.assert_allclose(smoother.prev_bias, golden["p_bias"][i], rtol=0, atol=1e-4)


def test_smoother_reset(golden):
    smoother = AffineSmoother(CropGeometry(256))
    first = smoother.estimate(golden["landmarks3"][0])
    smoothed = smoother.estimate(golden["landmarks3"][1])
    smoother.reset()
    fresh = smoother.estimate(golden["landmarks3"][1])
    np.testing.assert_array_equal(fresh, AffineSmoother(CropGeometry(256)).estimate(golden["landmarks3"][1]))
    assert np.abs(fresh - smoothed).max() > 1e-3  # smoothing changed the translation; reset removed it
    np.testing.assert_array_equal(fresh[:, :2], smoothed[:, :2])  # only the translation is smoothed
    np.testing.assert_allclose(first, golden["affine_matrix"][0], atol=1e-4)


def test_crops_and_face_match_golden(golden):
    geometry = CropGeometry(256)
    for i in (0, 3):
        assert_uint8_close(warp_crop(golden["frame"], golden["affine_matrix"][i], geometry), golden[f"crop_frame{i}"])
    face = align_face(golden["frame"], golden["affine_matrix"][0], geometry)
    assert face.shape == (3, 256, 256)
    assert_uint8_close(face, golden["face256_frame0"])


def test_paste_back_matches_golden(golden):
    frame = golden["frame"]
    before = frame.copy()
    out = paste_back(frame, gen_face(golden), golden["affine_matrix"][0], CropGeometry(256))
    np.testing.assert_array_equal(frame, before)  # input untouched
    assert_uint8_close(out, golden["restored_frame0"])
    assert (out != frame).mean() > 0.1  # the face really was pasted
    assert_uint8_close(paste_back(frame, torch.from_numpy(gen_face(golden)), golden["affine_matrix"][0], CropGeometry(256)),
                       golden["restored_frame0"])


def test_reference_implementation_matches_golden(golden):
    """The full-frame reference used below is itself the official computation."""
    ref = reference_paste_back(golden["frame"], gen_face(golden), golden["affine_matrix"][0], CropGeometry(256))
    assert_uint8_close(ref, golden["restored_frame0"])


def _hd_case(resolution: int, angle_deg: float = 2.0, at: tuple[float, float] = (700.0, 300.0), seed: int = 0):
    """A 1080p noise frame, a random face, and a matrix that puts the crop (about 420x560 px in the frame,
    rotated by ``angle_deg``) with its corner at ``at``."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    scale = 0.5 * resolution / 256
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    matrix = np.array([[c * scale, s * scale, 0.0], [-s * scale, c * scale, 0.0]], dtype=np.float32)
    matrix[:, 2] = -matrix[:, :2] @ np.array(at, dtype=np.float32)
    face = torch.from_numpy(rng.uniform(-1.1, 1.1, (3, resolution, resolution)).astype(np.float32))
    return frame, face, matrix


@pytest.mark.parametrize("resolution, angle_deg, at", [
    (256, 2.0, (700.0, 300.0)),
    (512, 2.0, (700.0, 300.0)),
    (256, 33.0, (900.0, 200.0)),
    (256, -20.0, (1700.0, 800.0)),  # runs off the right and bottom edges
    (512, 10.0, (-60.0, -40.0)),  # starts above and left of the frame
])
def test_roi_paste_back_equals_full_frame(resolution, angle_deg, at):
    geometry = CropGeometry(resolution)
    frame, face, matrix = _hd_case(resolution, angle_deg, at)
    out = paste_back(frame, face, matrix, geometry)
    x0, y0, x1, y1 = face_region(matrix, geometry, 1920, 1080)
    assert 0 < (x1 - x0) * (y1 - y0) < 0.25 * 1920 * 1080  # a real region, not the frame
    # the same computation over the whole frame gives bit-identical pixels
    np.testing.assert_array_equal(out, _paste_region(frame, face, matrix, geometry, (0, 0, 1920, 1080)))
    # outside the region the frame is untouched, inside it changed
    outside = np.ones((1080, 1920), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert (out[y0:y1, x0:x1] != frame[y0:y1, x0:x1]).mean() > 0.2
    # and the official full-frame kornia computation agrees within the uint8 tolerance
    assert_uint8_close(out, reference_paste_back(frame, face.numpy(), matrix, geometry))


def test_a_box_cutting_the_face_is_detected():
    """The equality above can fail: a box that cuts into the pasted face gives different pixels."""
    geometry = CropGeometry(256)
    frame, face, matrix = _hd_case(256)
    x0, y0, x1, y1 = face_region(matrix, geometry, 1920, 1080)
    full = _paste_region(frame, face, matrix, geometry, (0, 0, 1920, 1080))
    cut = 8  # the region's margin is 4 px
    inner = _paste_region(frame, face, matrix, geometry, (x0 + cut, y0 + cut, x1 - cut, y1 - cut))
    assert not np.array_equal(inner, full[y0 + cut : y1 - cut, x0 + cut : x1 - cut])


def test_face_partly_outside_the_frame(golden):
    geometry = CropGeometry(256)
    matrix = golden["affine_matrix"][0].copy()
    matrix[0, 2] -= 120  # shift the face towards the left border
    crop = warp_crop(golden["frame"], matrix, geometry)
    assert (crop == 127).all(axis=2).any()  # fill value where the crop leaves the frame
    out = paste_back(golden["frame"], gen_face(golden), matrix, geometry)
    assert_uint8_close(out, reference_paste_back(golden["frame"], gen_face(golden), matrix, geometry))


def test_resolution_512_shapes(golden):
    geometry = CropGeometry(512)
    matrix = AffineSmoother(geometry).estimate(golden["landmarks3"][0])
    np.testing.assert_allclose(matrix[:, :2], 2 * golden["affine_matrix"][0][:, :2], atol=1e-4)  # template x2
    assert warp_crop(golden["frame"], matrix, geometry).shape == (560, 420, 3)
    face = align_face(golden["frame"], matrix, geometry)
    assert face.shape == (3, 512, 512) and face.dtype == np.uint8
    out = paste_back(golden["frame"], face.astype(np.float32) / 127.5 - 1.0, matrix, geometry)
    assert out.shape == golden["frame"].shape


def test_input_checks(golden):
    geometry = CropGeometry(256)
    with pytest.raises(ValueError, match="face must have shape"):
        paste_back(golden["frame"], np.zeros((3, 512, 512), np.float32), golden["affine_matrix"][0], geometry)
    with pytest.raises(ValueError, match="uint8"):
        align_face(golden["frame"].astype(np.float32), golden["affine_matrix"][0], geometry)
    with pytest.raises(ValueError, match="affine matrix"):
        align_face(golden["frame"], np.eye(3), geometry)
