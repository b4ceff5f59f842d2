"""Skybox projections: a 360° panorama strip -> equirectangular image -> cube map, and back.

Conventions (used by every function here, and by the Blender extension):

Equirectangular image [C, H, 2H]: column coordinate u = (x + 0.5) / W in [0, 1), row coordinate
t = (y + 0.5) / H in [0, 1), row 0 at the top (zenith). Directions follow Blender's world
environment mapping (Blender world axes: Z up, right-handed):

    u = 0.5 - atan2(dir.y, dir.x) / (2 pi)        latitude = (0.5 - t) * pi

so Blender +X looks at u = 0.5 (the middle of the image), +Y at u = 0.25, -Y at u = 0.75, and
-X at the wrap seam (u = 0 = 1). Turning right (clockwise seen from above) moves right in the
image, so an equirect viewed from inside is not mirrored. A strip placed by
``strip_to_equirect`` keeps its columns: strip column x sits at u = (x + 0.5) / W, so the
middle of the strip faces Blender +X.

Cube maps [6, C, S, S] use the OpenGL / RenderMan cube-map convention (OpenGL spec, "Cube Map
Texture Selection"; also DirectX, Vulkan, Unity, Godot's face order): faces in the order

    0: +X   1: -X   2: +Y (up)   3: -Y (down)   4: +Z   5: -Z

in a left-handed, Y-up frame, with each face image stored top row first. In that frame every
face is an unmirrored 90° perspective view from the centre of the cube:

    face  looks at   image right   image up     equirect u at face centre
    +X    +X         -Z            +Y           0.5   (Blender +X, the middle of the strip)
    -X    -X         +Z            +Y           0.0   (Blender -X, the wrap seam)
    +Y    +Y (up)    +X            -Z           zenith; image bottom edge meets +Z
    -Y    -Y (down)  +X            +Z           nadir;  image top edge meets +Z
    +Z    +Z         +X            +Y           0.25  (Blender +Y)
    -Z    -Z         -X            +Y           0.75  (Blender -Y)

The cube frame relates to Blender's world by (cube x, y, z) = (Blender x, z, y): Y-up, and the
swap of two axes is what makes the frame left-handed. Unity (left-handed, Y up) shows these
faces unmirrored as they are. Right-handed renderers that sample cube textures directly mirror
them and compensate by negating x in the lookup: three.js does so for every ``CubeTexture``
loaded from images (``flipEnvMap``), PlayCanvas likewise; Godot takes the same face order and
its documentation notes that a cube map from another engine may need one lookup component
negated in the sky shader.

Layouts (``cubemap_layout``): "strip" is 6 faces side by side in the order above ([C, S, 6S]);
"cross" is the horizontal cross [C, 3S, 4S]:

    .   +Y  .   .
    -X  +Z  +X  -Z
    .   -Y  .   .

whose middle row reads left to right as the equirect does (u from -0.125 to 0.875).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import AlisError

__all__ = [
    "CUBE_FACES", "CUBE_FACE_FILES", "strip_to_equirect", "equirect_to_cubemap",
    "cubemap_to_equirect", "cubemap_layout", "layout_to_cubemap", "cubemap_directions",
    "direction_to_equirect_uv", "equirect_uv_to_direction",
]

CUBE_FACES = ("+X", "-X", "+Y", "-Y", "+Z", "-Z")
CUBE_FACE_FILES = ("px", "nx", "py", "ny", "pz", "nz")  # file-name stems, three.js style

# Per face: (forward, right, up) unit vectors in the cube frame; pixel (row, col) of a face looks
# at forward + sc * right - tc * up with sc, tc in (-1, 1) from the pixel centre.
_FACE_BASIS = torch.tensor([
    [[1, 0, 0], [0, 0, -1], [0, 1, 0]],    # +X
    [[-1, 0, 0], [0, 0, 1], [0, 1, 0]],    # -X
    [[0, 1, 0], [1, 0, 0], [0, 0, -1]],    # +Y
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]],    # -Y
    [[0, 0, 1], [1, 0, 0], [0, 1, 0]],     # +Z
    [[0, 0, -1], [-1, 0, 0], [0, 1, 0]],   # -Z
], dtype=torch.float64)

# Horizontal cross: face index -> (row, column) cell.
_CROSS_CELLS = {0: (1, 2), 1: (1, 0), 2: (0, 1), 3: (2, 1), 4: (1, 1), 5: (1, 3)}


# ----------------------------------------------------------------------------------------------
# Directions.

def equirect_uv_to_direction(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Equirect coordinates (u across, t down, both in [0, 1]) -> unit directions [..., 3], cube frame."""
    lon = (0.5 - u) * (2 * math.pi)  # Blender: atan2(y, x); cube frame: atan2(z, x)
    lat = (0.5 - t) * math.pi
    return torch.stack([lat.cos() * lon.cos(), lat.sin(), lat.cos() * lon.sin()], dim=-1)


def direction_to_equirect_uv(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions [..., 3] in the cube frame (any length) -> equirect (u in [0, 1), t in [0, 1])."""
    x, y, z = d.unbind(-1)
    u = torch.remainder(0.5 - torch.atan2(z, x) / (2 * math.pi), 1.0)
    t = 0.5 - torch.atan2(y, torch.hypot(x, z)) / math.pi
    return u, t


def cubemap_directions(face_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit view directions of every cube-map pixel centre: [6, S, S, 3] in the cube frame."""
    s = ((torch.arange(face_size, dtype=torch.float64) + 0.5) / face_size * 2 - 1).to(dtype)  # [S]
    sc, tc = s[None, :], s[:, None]  # column -> right, row -> down
    fwd, right, up = _FACE_BASIS.to(dtype).unbind(1)  # [6, 3] each (signed unit axes: exact in any dtype)
    d = (fwd[:, None, None] + sc[None, ..., None] * right[:, None, None]
         - tc[None, ..., None] * up[:, None, None])  # [6, S, S, 3]
    return d / d.norm(dim=-1, keepdim=True)


def _direction_to_face(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directions [..., 3] -> (face index, sc, tc) with sc, tc in [-1, 1] on that face."""
    axis = d.abs().argmax(dim=-1)  # 0: x, 1: y, 2: z
    major = d.gather(-1, axis[..., None])[..., 0]
    face = axis * 2 + (major < 0).long()
    # Each face's right and up vectors are signed unit axes: sc = d . right / |major|, etc.
    basis = _FACE_BASIS.to(d.device)
    right_axis, right_sign = basis[:, 1].abs().argmax(-1), basis[:, 1].sum(-1)
    up_axis, up_sign = basis[:, 2].abs().argmax(-1), basis[:, 2].sum(-1)
    inv = 1.0 / major.abs().clamp(min=1e-12)
    sc = d.gather(-1, right_axis[face][..., None])[..., 0] * right_sign.to(d.dtype)[face] * inv
    tc = -d.gather(-1, up_axis[face][..., None])[..., 0] * up_sign.to(d.dtype)[face] * inv
    return face, sc, tc


# ----------------------------------------------------------------------------------------------
# Sampling helpers.

def _pad_equirect(eq: torch.Tensor, pad: int) -> torch.Tensor:
    """[C, H, W] -> [C, H + 2p, W + 2p]: columns wrap around; rows continue over the poles
    (the row beyond a pole is the row at the pole, half a turn round)."""
    c, h, w = eq.shape
    out = eq.new_empty(c, h + 2 * pad, w + 2 * pad)  # one copy of a sky that may be 400 MB
    inner = out[..., pad:pad + w]
    inner[:, pad:pad + h] = eq
    inner[:, :pad] = eq[:, :pad].flip(1).roll(w // 2, dims=-1)
    inner[:, pad + h:] = eq[:, -pad:].flip(1).roll(w // 2, dims=-1)
    out[..., :pad] = inner[..., w - pad:]
    out[..., pad + w:] = inner[..., :pad]
    return out


def _sample_equirect(eq: torch.Tensor, u: torch.Tensor, t: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample [C, H, W] at equirect coordinates u, t (same shape [...]) -> [C, ...]."""
    c, h, w = eq.shape
    pad = 2
    padded = _pad_equirect(eq, pad)
    u, t = u.to(eq.device), t.to(eq.device)
    # Pixel coordinates in the padded image, then normalised for align_corners=False.
    gx = (u * w + pad) / (w + 2 * pad) * 2 - 1
    gy = (t * h + pad) / (h + 2 * pad) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2).to(eq.dtype)  # eq is float32/64 here
    out = F.grid_sample(padded[None], grid, mode=mode, padding_mode="border", align_corners=False)
    return out.reshape(c, *u.shape)


def _sample_faces(faces: torch.Tensor, d: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample a cube map [6, C, S, S] in directions d [N, 3] -> [C, N].

    Each face is first padded by 2 pixels taken from its neighbours, so bilinear/bicubic
    filtering crosses face edges smoothly instead of clamping; the padded faces are stacked
    into one atlas so that a single grid_sample call serves every direction."""
    _, c, s, _ = faces.shape
    pad = 2
    size = s + 2 * pad
    atlas = _pad_faces(faces, pad).permute(1, 0, 2, 3).reshape(1, c, 6 * size, size)
    face, sc, tc = _direction_to_face(d.to(faces.device))
    gx = ((sc + 1) * 0.5 * s + pad) / size * 2 - 1
    gy = ((tc + 1) * 0.5 * s + pad + face * size) / (6 * size) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2).to(faces.dtype)
    out = F.grid_sample(atlas, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.reshape(c, -1)


def _pad_faces(faces: torch.Tensor, pad: int) -> torch.Tensor:
    """[6, C, S, S] -> [6, C, S + 2p, S + 2p] with the border ring looked up on neighbouring faces."""
    n, c, s, _ = faces.shape
    size = s + 2 * pad
    idx = torch.arange(size)
    ring = (idx[:, None] < pad) | (idx[:, None] >= s + pad) | (idx[None] < pad) | (idx[None] >= s + pad)
    rows, cols = ring.nonzero(as_tuple=True)  # [R] positions of the ring in a padded face
    sc = ((cols.double() - pad + 0.5) / s * 2 - 1)[None, :, None]
    tc = ((rows.double() - pad + 0.5) / s * 2 - 1)[None, :, None]
    fwd, right, up = _FACE_BASIS.unbind(1)  # [6, 3] each
    d = fwd[:, None] + sc * right[:, None] - tc * up[:, None]  # [6, R, 3]
    face, fsc, ftc = _direction_to_face(d)
    # Nearest pixel on the owning face: the ring is at most `pad` px outside the edge.
    col = ((fsc + 1) * 0.5 * s).floor().long().clamp(0, s - 1)
    row = ((ftc + 1) * 0.5 * s).floor().long().clamp(0, s - 1)
    flat = faces.permute(1, 0, 2, 3).reshape(c, -1)  # [C, 6*S*S]
    padded = faces.new_zeros(n, c, size, size)
    padded[:, :, pad:pad + s, pad:pad + s] = faces
    padded[:, :, rows, cols] = flat[:, (face * s + row) * s + col].permute(1, 0, 2)  # [6, C, R]
    return padded


def _promote(x: torch.Tensor) -> torch.Tensor:
    """Half-precision images are sampled in float32: grid coordinates need the precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_image(x: torch.Tensor, name: str, ndim: int = 3) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != ndim or not x.is_floating_point():
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        want = "[C, H, W]" if ndim == 3 else "[6, C, S, S]"
        raise AlisError(f"{name}: expected a float tensor {want}, got {shape}")


# ----------------------------------------------------------------------------------------------
# Strip -> equirect.

def strip_to_equirect(
    strip: torch.Tensor,
    horizon: float = 0.5,
    strip_horizon: float = 0.5,
    strip_scale: float = 1.0,
    vertical_extent: Optional[float] = None,
    cap_blur: float = 2.0,
) -> torch.Tensor:
    """Wrap a 360° panorama strip [C, H, W] round the horizon of an equirect image [C, W/2, W].

    The strip keeps its width (its W columns are the full 360°); ``W`` must be even. Arguments:
    - ``horizon``: where the strip's horizon line lands, as a fraction of the output height
      (0 = zenith, 0.5 = equator, 1 = nadir).
    - ``strip_horizon``: where the horizon line is inside the strip, as a fraction of its
      height (0.5 = its middle row; raise it when the strip's horizon sits lower than that).
    - ``strip_scale``: vertical stretch of the strip. 1.0 keeps square pixels: the strip then
      spans ``H * 360 / W`` degrees of latitude.
    - ``vertical_extent``: the strip's vertical field of view in degrees; overrides ``strip_scale``.
    - ``cap_blur``: how fast the sky and ground caps blur, in columns of Gaussian sigma per row of
      distance from the strip (before the 1/cos(latitude) stretch of equirect rows).

    The sky cap (above the strip) continues the strip's top row, blurred more the further it
    gets (circular blur, so the 360° seam stays closed) and faded towards the mean colour of that
    row, which fills the zenith row exactly; the ground cap does the same from the bottom row.
    Works in any value range ([-1, 1] model output or [0, 1]); returns the strip's dtype.
    """
    _check_image(strip, "strip_to_equirect")
    c, h, w = strip.shape
    if w % 2 or w < 4:
        raise AlisError(f"strip_to_equirect: strip width must be even (360° = 2 x 180°), got {w}")
    out_h = w // 2
    deg_per_px = 360.0 / w
    if vertical_extent is not None:
        if not 0 < vertical_extent < 180:
            raise AlisError(f"strip_to_equirect: vertical_extent must be in (0, 180) degrees, got {vertical_extent}")
        strip_scale = vertical_extent / (h * deg_per_px)
    if strip_scale <= 0:
        raise AlisError(f"strip_to_equirect: strip_scale must be positive, got {strip_scale}")
    if cap_blur < 0:
        raise AlisError(f"strip_to_equirect: cap_blur must be >= 0, got {cap_blur}")
    rows = max(1, round(h * strip_scale))
    top = round(horizon * out_h - strip_horizon * rows)
    bottom = top + rows  # first row below the strip
    if top < 1 or bottom > out_h - 1:
        raise AlisError(
            f"strip_to_equirect: the strip would cover rows {top}..{bottom - 1} of a {out_h}-row image; "
            "it must leave at least one row at each pole: lower strip_scale/vertical_extent or move horizon nearer 0.5")

    dtype = strip.dtype
    work = strip.float()
    if rows != h:
        work = F.interpolate(work[None], size=(rows, w), mode="bilinear", align_corners=False,
                             antialias=rows < h)[0]
    out = torch.empty(c, out_h, w, dtype=torch.float32, device=work.device)
    out[:, top:bottom] = work
    # Latitude of each output row centre; equirect rows are stretched by 1/cos(latitude).
    lat = (0.5 - (torch.arange(out_h, dtype=torch.float64) + 0.5) / out_h) * math.pi
    stretch = (1.0 / lat.cos().clamp(min=1e-6)).to(work.device)
    out[:, :top] = _fill_cap(work[:, 0], distance=torch.arange(top, 0, -1), stretch=stretch[:top], cap_blur=cap_blur)
    out[:, bottom:] = _fill_cap(work[:, -1], distance=torch.arange(1, out_h - bottom + 1),
                                stretch=stretch[bottom:], cap_blur=cap_blur)
    return out.to(dtype)


def _fill_cap(edge: torch.Tensor, distance: torch.Tensor, stretch: torch.Tensor, cap_blur: float) -> torch.Tensor:
    """Rows of a pole cap from the strip's edge row.

    edge [C, W]; distance [R] rows from the strip (1 = adjacent; the largest is the pole row);
    stretch [R] = 1/cos(latitude). Returns [C, R, W]: the edge row blurred with a circular
    Gaussian of sigma = cap_blur * distance * stretch columns (done in the Fourier domain, so it
    is circular and costs the same for any sigma), blended towards the row mean with weight
    (distance / max distance)^2 so that the pole row is exactly uniform.
    """
    c, w = edge.shape
    d = distance.to(edge.device, torch.float64)
    sigma = cap_blur * d * stretch  # [R] columns
    freq = torch.fft.rfftfreq(w, dtype=torch.float64, device=edge.device)  # cycles per column, [W/2 + 1]
    gain = torch.exp(-2 * math.pi ** 2 * sigma[:, None] ** 2 * freq[None] ** 2)  # [R, W/2 + 1]
    spectrum = torch.fft.rfft(edge.float(), dim=-1)  # [C, W/2 + 1]
    blurred = torch.fft.irfft(spectrum[:, None] * gain.float()[None], n=w, dim=-1)  # [C, R, W]
    mean = edge.double().mean(dim=-1).float()[:, None, None].expand_as(blurred)
    weight = ((d / d.max()) ** 2).float()[None, :, None].expand_as(blurred)
    return torch.lerp(blurred, mean, weight)  # weight 1 gives exactly the mean


# ----------------------------------------------------------------------------------------------
# Equirect <-> cube map.

def equirect_to_cubemap(eq: torch.Tensor, face_size: int, mode: str = "bilinear") -> torch.Tensor:
    """Equirect [C, H, 2H] -> cube map [6, C, S, S] (faces +X, -X, +Y, -Y, +Z, -Z; see module doc).

    Sampling is ``mode`` ("bilinear", "bicubic" or "nearest") with the columns wrapping round
    the 360° seam and rows continuing over the poles. ``face_size`` about W / 4 keeps the
    equirect's resolution at the horizon; much smaller faces alias (no prefiltering).
    """
    _check_image(eq, "equirect_to_cubemap")
    if face_size < 1:
        raise AlisError(f"equirect_to_cubemap: face_size must be positive, got {face_size}")
    d = cubemap_directions(face_size)  # [6, S, S, 3] float32: as precise as the float32 grid it becomes
    u, t = direction_to_equirect_uv(d)
    faces = _sample_equirect(_promote(eq), u, t, mode)  # [C, 6, S, S]
    return faces.permute(1, 0, 2, 3).contiguous().to(eq.dtype)


def cubemap_to_equirect(faces: torch.Tensor, height: int, mode: str = "bilinear") -> torch.Tensor:
    """Cube map [6, C, S, S] (faces +X, -X, +Y, -Y, +Z, -Z) -> equirect [C, height, 2 * height].

    Sampling is ``mode`` ("bilinear", "bicubic" or "nearest"); faces are padded from their
    neighbours first, so filtering is continuous across face edges.
    """
    _check_image(faces, "cubemap_to_equirect", ndim=4)
    if faces.shape[0] != 6 or faces.shape[2] != faces.shape[3]:
        raise AlisError(f"cubemap_to_equirect: expected faces [6, C, S, S], got {tuple(faces.shape)}")
    if height < 1:
        raise AlisError(f"cubemap_to_equirect: height must be positive, got {height}")
    w = 2 * height
    u = ((torch.arange(w, dtype=torch.float64) + 0.5) / w).float()[None, :].expand(height, w)
    t = ((torch.arange(height, dtype=torch.float64) + 0.5) / height).float()[:, None].expand(height, w)
    d = equirect_uv_to_direction(u, t).reshape(-1, 3)
    return _sample_faces(_promote(faces), d, mode).reshape(faces.shape[1], height, w).to(faces.dtype)


# ----------------------------------------------------------------------------------------------
# Layouts.

def cubemap_layout(faces: torch.Tensor, layout: str = "cross", alpha: bool = False) -> torch.Tensor:
    """Arrange a cube map [6, C, S, S] as one image.

    "cross": horizontal cross [C, 3S, 4S] (see module doc), empty cells zero;
    "strip": [C, S, 6S], faces left to right in the order +X, -X, +Y, -Y, +Z, -Z.
    ``alpha=True`` appends an alpha channel: 1 on faces, 0 (transparent black) in empty cells.
    """
    _check_image(faces, "cubemap_layout", ndim=4)
    n, c, s, s2 = faces.shape
    if n != 6 or s != s2:
        raise AlisError(f"cubemap_layout: expected faces [6, C, S, S], got {tuple(faces.shape)}")
    if alpha:
        faces = torch.cat([faces, torch.ones(6, 1, s, s, dtype=faces.dtype)], dim=1)
        c += 1
    if layout == "strip":
        return faces.permute(1, 2, 0, 3).reshape(c, s, 6 * s)
    if layout == "cross":
        out = torch.zeros(c, 3 * s, 4 * s, dtype=faces.dtype)
        for f, (row, col) in _CROSS_CELLS.items():
            out[:, row * s:(row + 1) * s, col * s:(col + 1) * s] = faces[f]
        return out
    raise AlisError(f"cubemap_layout: layout must be 'cross' or 'strip', got {layout!r}")


def layout_to_cubemap(image: torch.Tensor, layout: str = "cross") -> torch.Tensor:
    """Split a "cross" [C, 3S, 4S] or "strip" [C, S, 6S] image back into faces [6, C, S, S]."""
    _check_image(image, "layout_to_cubemap")
    c, h, w = image.shape
    if layout == "strip":
        if w != 6 * h:
            raise AlisError(f"layout_to_cubemap: a strip must be 6 faces wide (W = 6 H), got {h}x{w}")
        return image.reshape(c, h, 6, h).permute(2, 0, 1, 3).contiguous()
    if layout == "cross":
        s = h // 3
        if h != 3 * s or w != 4 * s:
            raise AlisError(f"layout_to_cubemap: a horizontal cross must be 4S wide and 3S high, got {h}x{w}")
        return torch.stack([image[:, r * s:(r + 1) * s, q * s:(q + 1) * s] for r, q in
                            (_CROSS_CELLS[f] for f in range(6))])
    raise AlisError(f"layout_to_cubemap: layout must be 'cross' or 'strip', got {layout!r}")
