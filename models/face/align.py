"""The official LatentSync face alignment and paste-back (SPEC 4.2-4.4 and 9.3), as plain functions.

Frame -> crop: three anchor points (brows, nose) from the 106 detector landmarks, a similarity transform onto a
fixed template with temporal smoothing of the translation (`AffineSmoother`), a bilinear warp with fill 127 into a
crop taller than wide (210x280 at R=256), truncation to uint8 and a Lanczos-4 resize to R x R (`align_face`).

Face -> frame (`paste_back`): the generated face is resized back to the crop (bicubic + antialias), warped into the
frame with the inverse matrix, and blended through a mask that is eroded and blurred at the edges.

Precision: everything runs in float32 on the CPU. The official CUDA path runs the warps in float16; the golden
vectors were produced in float32 (CPU float16 warps give NaNs), and so are ours. Uint8 results can differ from a
float16 run by a grey level at a few pixels.

Speed: `paste_back` never warps the full frame. Every step is local (bilinear warp, 2x2 and r x r erosion, blur of
radius w_edge) and the blend weight is zero outside the warped crop, so the work is done on the crop's bounding box
in the frame plus a few pixels (`face_region`); the rest of the frame is copied untouched. The result is
bit-identical to the same computation over the full frame. `align_face` likewise
only converts the part of the frame that the crop samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import kornia
import numpy as np
import torch
import torch.nn.functional as F

# Landmark indices of the 106-point layout (InsightFace 2d106det numbering) averaged into the three anchors.
LEFT_BROW = (43, 48, 49, 51, 50)
RIGHT_BROW = (101, 102, 103, 104, 105)
NOSE = (74, 77, 83, 86)

FILL_VALUE = 127.0
SMOOTHING = 0.2  # weight of the previous bias

_BASE_TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # at ratio 1


@dataclass(frozen=True)
class CropGeometry:
    """Crop template and size at working resolution R (SPEC 4.3).

    ``ratio = R / 256 * 2.8``; the crop is ``(int(75 * ratio), int(100 * ratio))`` = (w, h): 210x280 at R=256,
    420x560 at R=512. The crop is later squashed to R x R.
    """

    resolution: int

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")

    @property
    def ratio(self) -> float:
        return self.resolution / 256 * 2.8

    @property
    def template(self) -> np.ndarray:
        """(3, 2) float32 crop coordinates of (left brow, right brow, nose)."""
        return (_BASE_TEMPLATE * self.ratio).astype(np.float32)

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of the crop in pixels."""
        return int(75 * self.ratio), int(100 * self.ratio)


def anchors_from_landmarks106(landmarks: np.ndarray) -> np.ndarray:
    """Left brow, right brow and nose points (SPEC 4.2).

    Args:
        landmarks: (106, 2) image (x, y) points (the detector's, rounded to integers by the official code).

    Returns:
        (3, 2) float64, each point the mean of its landmarks rounded half-to-even.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (106, 2):
        raise ValueError(f"landmarks must have shape (106, 2), got {landmarks.shape}")
    points = np.stack([landmarks[list(idx)].mean(axis=0) for idx in (LEFT_BROW, RIGHT_BROW, NOSE)])
    return np.round(points)  # numpy rounds half to even


class AffineSmoother:
    """Image -> crop similarity transforms for a run of consecutive frames, with the official smoothing.

    The state is the previous frame's bias (normalised nose offset). One instance per continuous run of frames
    processed in order; call `reset` (or make a new one) after a face gap.
    """

    def __init__(self, geometry: CropGeometry) -> None:
        self.geometry = geometry
        self.prev_bias: np.ndarray | None = None  # (2,) float32

    def reset(self) -> None:
        """Forget the previous bias: the next frame is not smoothed."""
        self.prev_bias = None

    def estimate(self, anchors: np.ndarray) -> np.ndarray:
        """Similarity transform of ``anchors`` onto the template, then smoothing (SPEC 4.3).

        Args:
            anchors: (3, 2) image points from `anchors_from_landmarks106`.

        Returns:
            (2, 3) float32 matrix mapping image (x, y, 1) to crop (x, y).
        """
        anchors = np.asarray(anchors)
        if anchors.shape != (3, 2):
            raise ValueError(f"anchors must have shape (3, 2), got {anchors.shape}")
        src = torch.as_tensor(anchors, dtype=torch.float32)
        dst = torch.from_numpy(self.geometry.template)
        c_src, c_dst = src.mean(dim=0), dst.mean(dim=0)
        src_n, dst_n = src - c_src, dst - c_dst
        s_src, s_dst = src_n.std(), dst_n.std()  # unbiased, over all 6 coordinates
        src_n, dst_n = src_n / s_src, dst_n / s_dst
        u, _, vt = torch.linalg.svd(src_n.T @ dst_n)  # K = src_n^T dst_n = U S V^T
        rot = (u @ vt).T  # V U^T
        if torch.det(rot) < 0:
            vt[-1, :] *= -1
            rot = (u @ vt).T
        scale = s_dst / s_src
        matrix = torch.cat([scale * rot, (c_dst - scale * rot @ c_src)[:, None]], dim=1)  # [2, 3]

        bias = (dst_n[2] - src_n[2]).numpy()
        if self.prev_bias is not None:
            bias = (self.prev_bias * SMOOTHING + bias * (1 - SMOOTHING)).astype(np.float32)
        self.prev_bias = bias
        matrix = matrix.numpy()
        matrix[:, 2] += bias
        return matrix


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.shape != (2, 3):
        raise ValueError(f"affine matrix must have shape (2, 3), got {matrix.shape}")
    return matrix


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")


def _bounding_box(matrix: np.ndarray, width: int, height: int, margin: int, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Frame box (x0, y0, x1, y1), clipped, holding every point that ``matrix`` maps into the open box
    (-1, width) x (-1, height) (where a bilinear sample still touches the image), grown by ``margin``."""
    corners = np.array([[-1.0, -1.0], [width, -1.0], [-1.0, height], [width, height]])
    pts = corners @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2].astype(np.float64)
    x0 = max(math.floor(pts[:, 0].min()) - margin, 0)
    y0 = max(math.floor(pts[:, 1].min()) - margin, 0)
    x1 = min(math.ceil(pts[:, 0].max()) + margin + 1, frame_w)
    y1 = min(math.ceil(pts[:, 1].max()) + margin + 1, frame_h)
    return x0, y0, max(x1, x0), max(y1, y0)


def _sampling_grid(dst_to_src: np.ndarray, origin: tuple[int, int], size_hw: tuple[int, int],
                   src_origin: tuple[int, int], src_hw: tuple[int, int]) -> torch.Tensor:
    """`grid_sample` grid (align_corners=True) for the output pixels ``origin + [0, w) x [0, h)``.

    Source coordinates are computed in float64 from absolute pixel positions, so a pixel samples the same point
    whatever region of the output is computed (a region of interest gives bit-identical pixels).

    Args:
        dst_to_src: (2, 3) float64 matrix, output (x, y, 1) -> source (x, y).
        origin: (x0, y0) of the output region in output coordinates.
        size_hw: (h, w) of the output region.
        src_origin: (x0, y0) of the source array within the full source image.
        src_hw: (h, w) of the source array.

    Returns:
        [1, h, w, 2] float32 normalised (x, y) grid.
    """
    m = dst_to_src.astype(np.float64)
    xs = torch.arange(origin[0], origin[0] + size_hw[1], dtype=torch.float64)  # [w]
    ys = torch.arange(origin[1], origin[1] + size_hw[0], dtype=torch.float64)  # [h]
    grid = torch.empty(size_hw[0], size_hw[1], 2, dtype=torch.float64)
    for axis, (src_o, src_len) in enumerate(((src_origin[0], src_hw[1]), (src_origin[1], src_hw[0]))):
        # normalised source coordinate = (m[axis] . (x, y, 1) - src_o) * 2 / (len - 1) - 1, split into a column
        # term and a row term: [w] + [h] -> [h, w]
        k = 2.0 / max(src_len - 1, 1)
        col = xs * (m[axis, 0] * k) + ((m[axis, 2] - src_o) * k - 1.0)
        row = ys * (m[axis, 1] * k)
        torch.add(row[:, None], col[None, :], out=grid[..., axis])
    return grid[None].float()  # [1, h, w, 2]


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear, zero padding, align_corners=True (kornia's `warp_affine` sampling): [1, C, h, w] -> [1, C, *grid]."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def warp_crop(frame: np.ndarray, matrix: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """The crop before resizing (SPEC 4.4): bilinear warp, fill 127 outside the frame, truncation to uint8.

    Args:
        frame: (H, W, 3) uint8 RGB.
        matrix: (2, 3) image -> crop matrix from `AffineSmoother.estimate`.
        geometry: crop geometry.

    Returns:
        (crop_h, crop_w, 3) uint8.
    """
    _check_frame(frame)
    matrix = _as_matrix(matrix)
    crop_w, crop_h = geometry.crop_size
    frame_h, frame_w = frame.shape[:2]
    crop_to_frame = cv2.invertAffineTransform(matrix.astype(np.float64))
    # Only the part of the frame the crop samples (+2 px for the bilinear footprint) is converted to float.
    x0, y0, x1, y1 = _bounding_box(crop_to_frame, crop_w, crop_h, 2, frame_w, frame_h)
    if x1 - x0 < 2 or y1 - y0 < 2:  # (almost) outside the frame: sample the whole frame
        x0, y0, x1, y1 = 0, 0, frame_w, frame_h
    region = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).permute(2, 0, 1)[None].float()  # [1, 3, h, w]
    grid = _sampling_grid(crop_to_frame, (0, 0), (crop_h, crop_w), (x0, y0), (y1 - y0, x1 - x0))
    warped = _sample(torch.cat([region, torch.ones(1, 1, y1 - y0, x1 - x0)], dim=1), grid)  # [1, 4, crop_h, crop_w]
    crop = warped[:, :3] + (1 - warped[:, 3:]) * FILL_VALUE  # channel 3: bilinear weight inside the frame
    return crop[0].permute(1, 2, 0).to(torch.uint8).numpy()  # [3, h, w] -> [h, w, 3], truncation


def align_face(frame: np.ndarray, matrix: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Aligned face: `warp_crop`, then OpenCV Lanczos-4 resize to R x R (SPEC 4.4).

    Args:
        frame: (H, W, 3) uint8 RGB.
        matrix: (2, 3) image -> crop matrix.
        geometry: crop geometry (R = ``geometry.resolution``).

    Returns:
        (3, R, R) uint8 face.
    """
    crop = warp_crop(frame, matrix, geometry)
    r = geometry.resolution
    face = cv2.resize(crop, (r, r), interpolation=cv2.INTER_LANCZOS4)  # [R, R, 3]
    return np.ascontiguousarray(face.transpose(2, 0, 1))  # [R, R, 3] -> [3, R, R]


def _edge_width(area: float) -> int:
    return int(area ** 0.5) // 20


REGION_MARGIN = 4  # px around the warped crop's bounding box


def face_region(matrix: np.ndarray, geometry: CropGeometry, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Frame box ``(x0, y0, x1, y1)`` (clipped, exclusive end) outside which `paste_back` leaves the frame as is.

    It holds every pixel the inverse-warped crop touches (the bilinear footprint) plus `REGION_MARGIN` pixels.
    That margin is enough: the soft mask is the warped crop eroded by w_edge then blurred by a radius of w_edge,
    so it is zero outside the warped crop, and a band of zeros inside the box makes the erosion and the blur's
    reflected border behave as on the full frame (tests/models/face/test_align.py checks bit-equality).
    """
    crop_w, crop_h = geometry.crop_size
    crop_to_frame = cv2.invertAffineTransform(_as_matrix(matrix).astype(np.float64))
    return _bounding_box(crop_to_frame, crop_w, crop_h, REGION_MARGIN, frame_w, frame_h)


def paste_back(frame: np.ndarray, face: np.ndarray | torch.Tensor, matrix: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Blend a generated face back into its frame (SPEC 9.3), working on the face's region only.

    Args:
        frame: (H, W, 3) uint8 RGB source frame (not modified).
        face: (3, R, R) float in [-1, 1] (not clamped), the decoded face.
        matrix: (2, 3) image -> crop matrix the face was aligned with.
        geometry: crop geometry.

    Returns:
        (H, W, 3) uint8 new frame; pixels outside the face's region are copies of ``frame``.
    """
    _check_frame(frame)
    matrix = _as_matrix(matrix)
    face = torch.as_tensor(face).float()
    r = geometry.resolution
    if tuple(face.shape) != (3, r, r):
        raise ValueError(f"face must have shape (3, {r}, {r}), got {tuple(face.shape)}")
    out = frame.copy()
    x0, y0, x1, y1 = face_region(matrix, geometry, frame.shape[1], frame.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = _paste_region(frame, face, matrix, geometry, (x0, y0, x1, y1))
    return out


def _paste_region(frame: np.ndarray, face: torch.Tensor, matrix: np.ndarray, geometry: CropGeometry,
                  box: tuple[int, int, int, int]) -> np.ndarray:
    """SPEC 9.3 computed on the frame box ``(x0, y0, x1, y1)`` only; returns the new (y1-y0, x1-x0, 3) uint8 pixels.

    Equal to the full-frame computation whenever ``box`` contains `face_region` (each step is local and the
    blend weight is zero outside it).
    """
    x0, y0, x1, y1 = box
    crop_w, crop_h = geometry.crop_size

    # 1. Face back to the crop size (torchvision-style bicubic with antialias, no clamping).
    face = F.interpolate(face[None], size=(crop_h, crop_w), mode="bicubic", antialias=True, align_corners=False)

    # 2. Frame -> crop sampling grid for the box: the float32 matrix itself, applied in float64 (the official
    #    code inverts the inverse matrix in float32).
    grid = _sampling_grid(matrix, (x0, y0), (y1 - y0, x1 - x0), (0, 0), (crop_h, crop_w))

    # 3-4. Warped all-ones crop (zero padding) = inv_mask; face warped with fill 127 in the [-1, 1] domain,
    #      then to [0, 255].
    warped = _sample(torch.cat([face, torch.ones(1, 1, crop_h, crop_w)], dim=1), grid)  # [1, 4, h, w], one pass
    inv_face, inv_mask = warped[:, :3], warped[:, 3:]  # [1, 3, h, w], [1, 1, h, w]
    inv_face.add_((1 - inv_mask) * FILL_VALUE).mul_(0.5).add_(0.5).clamp_(0, 1).mul_(255)  # in place, same arithmetic

    # 5. 2x2 erosion (kornia: origin (1, 1), outside ignored); the pasted face.
    mask_e = kornia.morphology.erosion(inv_mask, torch.ones(2, 2))
    pasted = inv_face.mul_(mask_e)

    # 6-8. Edge width from the mask area; r x r erosion (OpenCV) and Gaussian blur -> soft mask.
    w_edge = _edge_width(float(mask_e.sum()))
    center = cv2.erode(mask_e[0, 0].numpy(), np.ones((2 * w_edge, 2 * w_edge), np.uint8))  # empty kernel = 3x3
    blur = 2 * w_edge + 1
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    soft = kornia.filters.gaussian_blur2d(torch.from_numpy(center)[None, None], (blur, blur), (sigma, sigma))

    # 9. Blend, truncate to uint8.
    region = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).permute(2, 0, 1)[None].float()
    blended = pasted.mul_(soft).add_(region.mul_(1 - soft))  # soft * pasted + (1 - soft) * frame, [1, 3, h, w]
    return blended[0].permute(1, 2, 0).to(torch.uint8).numpy()  # [3, h, w] -> [h, w, 3], truncation


__all__ = ["CropGeometry", "AffineSmoother", "align_face", "anchors_from_landmarks106", "face_region", "paste_back", "warp_crop"]
