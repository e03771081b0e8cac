"""Draw the extension's 128x128 icons with numpy and write them with a small PNG writer (zlib).

Run ``python Testing/pytest/slicer_scene/make_icons.py`` from the repository root to regenerate them; the test suite
checks that they exist, are valid 128x128 RGBA PNGs and match what this script draws.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

SIZE = 128
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def write_png(path: str, rgba: np.ndarray) -> None:
    """Write an (H, W, 4) uint8 array as an 8-bit RGBA PNG (filter 0 on every row)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w, c = rgba.shape
    assert c == 4
    raw = b"".join(b"\x00" + rgba[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def read_png(path: str) -> np.ndarray:
    """Read back an 8-bit RGBA, non-interlaced PNG written with filter 0 (what write_png writes)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 6), "expected 8-bit RGBA"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[y * (4 * w + 1) : (y + 1) * (4 * w + 1)] for y in range(h)]
    assert all(r[0] == 0 for r in rows), "only filter type 0 supported"
    return np.frombuffer(b"".join(r[1:] for r in rows), np.uint8).reshape(h, w, 4)


def _grid():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    return x, y


def _blend(img, mask, color, alpha=1.0):
    a = np.clip(mask, 0, 1)[..., None] * alpha
    img[..., :3] = img[..., :3] * (1 - a) + np.array(color, float)[None, None, :] * a
    img[..., 3] = np.maximum(img[..., 3], a[..., 0])


def _smooth(d, width=1.0):
    """Anti-aliased inside-mask from a signed distance (negative inside)."""
    return np.clip(0.5 - d / width, 0, 1)


def _rounded_square(x, y, margin=6, radius=22):
    cx = np.clip(x, margin + radius, SIZE - margin - radius)
    cy = np.clip(y, margin + radius, SIZE - margin - radius)
    return np.hypot(x - cx, y - cy) - radius


def _background(top=(0.10, 0.22, 0.42), bottom=(0.05, 0.10, 0.22)):
    x, y = _grid()
    img = np.zeros((SIZE, SIZE, 4))
    t = (y / SIZE)[..., None]
    grad = np.array(top)[None, None] * (1 - t) + np.array(bottom)[None, None] * t
    mask = _smooth(_rounded_square(x, y))
    img[..., :3] = grad
    img[..., 3] = mask
    return img, x, y


def _organ(img, x, y, cx, cy, scale, color, outline=(1, 1, 1)):
    ang = np.arctan2(y - cy, x - cx)
    r = scale * (1 + 0.18 * np.sin(3 * ang + 0.7) + 0.08 * np.cos(5 * ang))
    d = np.hypot(x - cx, y - cy) - r
    _blend(img, _smooth(d) * img[..., 3], color, 0.85)
    _blend(img, _smooth(np.abs(d) - 1.2) * img[..., 3], outline, 0.95)


def _u_shape(img, x, y, color=(1, 1, 1)):
    """A 'U' (U-Net) drawn as a thick stroke: two legs and a half-circle bottom."""
    cx, top, bottom, half = 64, 30, 74, 22
    w = 5.0
    left = np.maximum(np.abs(x - (cx - half)) - w, np.maximum(top - y, y - bottom))
    right = np.maximum(np.abs(x - (cx + half)) - w, np.maximum(top - y, y - bottom))
    arc = np.where(y >= bottom, np.abs(np.hypot(x - cx, y - bottom) - half) - w, 1e3)
    d = np.minimum(np.minimum(left, right), arc)
    _blend(img, _smooth(d) * img[..., 3], color, 0.95)


def _bolt(img, x, y, color=(1.0, 0.82, 0.2)):
    """A small lightning bolt ('light') at the top right: union of two triangles."""
    def tri(p0, p1, p2):
        def edge(a, b):
            return (x - a[0]) * (b[1] - a[1]) - (y - a[1]) * (b[0] - a[0])
        e0, e1, e2 = edge(p0, p1), edge(p1, p2), edge(p2, p0)
        inside = ((e0 <= 0) & (e1 <= 0) & (e2 <= 0)) | ((e0 >= 0) & (e1 >= 0) & (e2 >= 0))
        return inside.astype(float)
    m = np.maximum(tri((104, 12), (86, 46), (100, 44)), tri((100, 38), (90, 74), (110, 38)))
    m = np.maximum(m, tri((104, 12), (92, 44), (110, 38)))
    _blend(img, m * img[..., 3], color, 1.0)


def draw(kind: str) -> np.ndarray:
    img, x, y = _background()
    if kind == "segmentation":
        _organ(img, x, y, 50, 82, 26, (0.85, 0.33, 0.30))
        _organ(img, x, y, 84, 92, 16, (0.40, 0.75, 0.45))
        _u_shape(img, x, y)
        _bolt(img, x, y)
    elif kind == "effect":
        img, x, y = _background(top=(0.25, 0.25, 0.28), bottom=(0.12, 0.12, 0.14))
        _organ(img, x, y, 60, 70, 34, (0.40, 0.75, 0.45))
        _bolt(img, x, y)
    elif kind == "extension":
        _organ(img, x, y, 64, 84, 30, (0.85, 0.33, 0.30))
        _u_shape(img, x, y)
        _bolt(img, x, y)
    elif kind == "training":
        _organ(img, x, y, 58, 80, 26, (0.95, 0.65, 0.20))
        _u_shape(img, x, y)
        _bolt(img, x, y, (0.5, 0.9, 1.0))
    else:
        raise ValueError(kind)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


ICONS = {
    "LightUNETRSegmentation/Resources/Icons/LightUNETRSegmentation.png": "segmentation",
    "LightUNETRSegmentation/Resources/Icons/SegmentEditorLightUNETR.png": "effect",
    "LightUNETR.png": "extension",
    "LightUNETRTraining/Resources/Icons/LightUNETRTraining.png": "training",
}


def main() -> None:
    for rel, kind in ICONS.items():
        path = os.path.join(REPO, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_png(path, draw(kind))
        print("wrote", rel)


if __name__ == "__main__":
    main()
