"""Which face to lip-sync when a frame shows several: ``largest`` | ``index=K`` | ``bbox=x,y,w,h``.

The choice is applied once, at the first frame with faces; after that the chosen person is *tracked*
(box overlap and landmark continuity), so it does not jump to another face that grows larger later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lipline.errors import FaceChoiceError
from lipline.models.face.detect import Box, Detection

_SYNTAX = "largest | index=K (K-th face from the left, 0-based) | bbox=x,y,w,h (pixels of the upright frame)"
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"


@dataclass(frozen=True)
class FaceChoice:
    """A parsed face choice. ``str(choice)`` is its canonical spelling (part of the face-track cache key)."""

    kind: Literal["largest", "index", "bbox"] = "largest"
    index: int | None = None
    bbox: Box | None = None

    @classmethod
    def parse(cls, text: "str | FaceChoice | None") -> "FaceChoice":
        """Parse ``largest``, ``index=K`` or ``bbox=x,y,w,h``; raises `FaceChoiceError` on anything else."""
        if isinstance(text, FaceChoice):
            return text
        raw = (text or "largest").strip()
        if raw.lower() == "largest":
            return cls()
        key, sep, value = raw.partition("=")
        key = key.strip().lower()
        if sep and key == "index" and re.fullmatch(r"\s*\d+\s*", value):
            return cls(kind="index", index=int(value))
        if sep and key == "bbox":
            match = re.fullmatch(",".join([_NUMBER] * 4), value)
            if match:
                x, y, w, h = (float(v) for v in match.groups())
                if w > 0 and h > 0:
                    return cls(kind="bbox", bbox=Box(x, y, w, h))
        raise FaceChoiceError(raw, _SYNTAX)

    def __str__(self) -> str:
        if self.kind == "index":
            return f"index={self.index}"
        if self.kind == "bbox":
            b = self.bbox
            return f"bbox={b.x:g},{b.y:g},{b.w:g},{b.h:g}"
        return "largest"

    def pick(self, faces: list[Detection]) -> Detection | None:
        """The chosen face among ``faces`` (sorted left to right), or None (no face / index out of range /
        no face overlapping the box)."""
        if not faces:
            return None
        if self.kind == "index":
            ordered = sorted(faces, key=lambda d: d.box.x)
            return ordered[self.index] if self.index < len(ordered) else None
        if self.kind == "bbox":
            best = max(faces, key=lambda d: _overlap(d.box, self.bbox))
            return best if _overlap(best.box, self.bbox) > 0 else None
        return max(faces, key=lambda d: d.box.area)


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the face box's area (a small user box inside a big face still picks it)."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / a.area if a.area > 0 else 0.0
