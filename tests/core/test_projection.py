"""Skybox projections: strip -> equirect caps, equirect <-> cube map, layouts, conventions."""
import math

import pytest
import torch

from alis_core.errors import AlisError
from alis_core.projection import (
    CUBE_FACES, cubemap_layout, cubemap_to_equirect, equirect_to_cubemap, layout_to_cubemap,
    strip_to_equirect,
)


def periodic_strip(h=16, w=128, noise=0.05, seed=0):
    """A strip that closes into a 360° loop: smooth periodic content plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(w) / w * 2 * math.pi
    y = torch.linspace(0, 1, h)[:, None]
    base = torch.stack([
        0.5 + 0.3 * torch.sin(x + 1.0) * (1 - y),
        0.4 + 0.2 * torch.cos(2 * x) + 0.2 * y,
        0.6 + 0.2 * torch.sin(3 * x) * y,
    ])  # [3, h, w]
    return base + noise * torch.randn(3, h, w, generator=g)


def blender_directions(h):
    """Unit directions of equirect pixel centres [h, 2h, 3] in Blender's world frame (Z up),
    written out independently of the module: u = 0.5 - atan2(y, x) / 2pi."""
    w = 2 * h
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    t = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    lon = ((0.5 - u) * 2 * math.pi)[None, :]
    lat = ((0.5 - t) * math.pi)[:, None]
    return torch.stack(torch.broadcast_tensors(lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()), dim=-1)


def smooth_equirect(h=64):
    """A smooth function of direction (continuous over the seam and the poles) as an equirect."""
    d = blender_directions(h)
    x, y, z = d.unbind(-1)
    return torch.stack([0.5 + 0.3 * x, 0.5 + 0.3 * y * z + 0.1 * z, 0.5 + 0.2 * torch.sin(3 * y)]).float()


def blob_equirect(h, direction, sigma=0.08):
    """An equirect that is a Gaussian blob round a Blender-frame direction."""
    target = torch.tensor(direction, dtype=torch.float64)
    target = target / target.norm()
    angle = torch.acos((blender_directions(h) @ target).clamp(-1, 1))
    return torch.exp(-0.5 * (angle / sigma) ** 2).float()[None].expand(3, -1, -1).contiguous()


# ----------------------------------------------------------------------------------------------
# strip_to_equirect

def test_strip_is_placed_unchanged_around_the_horizon():
    strip = periodic_strip()
    eq = strip_to_equirect(strip)
    assert eq.shape == (3, 64, 128)
    torch.testing.assert_close(eq[:, 24:40], strip)  # 64/2 - 16/2 = 24
    eq = strip_to_equirect(strip, horizon=0.25)
    torch.testing.assert_close(eq[:, 8:24], strip)


def test_pole_rows_are_uniform():
    eq = strip_to_equirect(periodic_strip(noise=0.2))
    for row in (eq[:, 0], eq[:, -1]):
        assert (row.max(dim=-1).values - row.min(dim=-1).values).max() == 0
    # and each pole holds the mean of the strip row it grew from
    strip = periodic_strip(noise=0.2)
    torch.testing.assert_close(eq[:, 0, 0], strip[:, 0].mean(-1))
    torch.testing.assert_close(eq[:, -1, 0], strip[:, -1].mean(-1))


def test_caps_wrap_round_the_seam():
    eq = strip_to_equirect(periodic_strip(noise=0.1))
    for rows in (eq[:, :24], eq[:, 40:], eq):  # sky cap, ground cap, whole image
        seam = (rows[..., 0] - rows[..., -1]).abs().mean()
        interior = (rows[..., 1:] - rows[..., :-1]).abs().mean()
        assert seam < 1.5 * interior, (seam, interior)


def test_no_edge_where_the_strip_ends():
    strip = periodic_strip(noise=0.1)
    eq = strip_to_equirect(strip)
    inside = (strip[:, 1:] - strip[:, :-1]).abs().mean()  # typical row-to-row change in the strip
    top_jump = (eq[:, 23] - eq[:, 24]).abs().mean()
    bottom_jump = (eq[:, 40] - eq[:, 39]).abs().mean()
    assert top_jump < 0.7 * inside and bottom_jump < 0.7 * inside, (top_jump, bottom_jump, inside)
    # and the caps keep changing gently all the way to the poles
    rows = (eq[:, 1:] - eq[:, :-1]).abs().mean(dim=(0, 2))  # [63]: row i+1 - row i
    assert rows[:23].max() < inside and rows[40:].max() < inside


def test_vertical_extent_and_strip_scale_stretch_the_strip():
    ramp = torch.arange(8, dtype=torch.float32)[None, :, None].expand(3, 8, 128).contiguous()
    eq = strip_to_equirect(ramp, vertical_extent=45.0)  # 45° / (360°/128 per px) = 16 rows
    same = strip_to_equirect(ramp, strip_scale=2.0)
    torch.testing.assert_close(eq, same)
    band = eq[0, 24:40, 0]
    assert torch.allclose(band[2:-2].diff(), torch.full((11,), 0.5))  # slope halved: stretched x2
    assert eq[0, :24].eq(band[0]).all() and eq[0, 40:].eq(band[-1]).all()  # constant rows extend


def test_strip_to_equirect_rejects_bad_input():
    with pytest.raises(AlisError, match="even"):
        strip_to_equirect(torch.rand(3, 8, 127))
    with pytest.raises(AlisError, match="pole"):
        strip_to_equirect(torch.rand(3, 64, 128))  # fills every row: no room for the caps
    with pytest.raises(AlisError, match="vertical_extent"):
        strip_to_equirect(torch.rand(3, 8, 128), vertical_extent=200)


def test_strip_to_equirect_keeps_dtype_and_range_mapping():
    strip = periodic_strip().clamp(-1, 1)
    eq16 = strip_to_equirect(strip.to(torch.bfloat16))
    assert eq16.dtype == torch.bfloat16
    # affine in the values: works the same on [-1, 1] and [0, 1] images
    torch.testing.assert_close(strip_to_equirect(strip * 0.5 + 0.5), strip_to_equirect(strip) * 0.5 + 0.5)


# ----------------------------------------------------------------------------------------------
# Cube maps

@pytest.mark.parametrize("direction, face", [
    ((1, 0, 0), "+X"),    # Blender +X: middle of the equirect (u = 0.5)
    ((-1, 0, 0), "-X"),   # Blender -X: the wrap seam
    ((0, 1, 0), "+Z"),    # Blender +Y: u = 0.25
    ((0, -1, 0), "-Z"),   # Blender -Y: u = 0.75
    ((0, 0, 1), "+Y"),    # zenith
    ((0, 0, -1), "-Y"),   # nadir
])
def test_feature_lands_on_the_named_face_centre(direction, face):
    faces = equirect_to_cubemap(blob_equirect(48, direction, sigma=0.2), 16)
    brightest = faces[:, 0].flatten(1).max(dim=1).values
    assert CUBE_FACES[int(brightest.argmax())] == face
    centre = faces[CUBE_FACES.index(face), 0, 7:9, 7:9]  # the four centre pixels of a 16 px face
    assert centre.min() > brightest.max() - 2e-3 and centre.min() > 0.85


def test_off_centre_feature_lands_on_the_right_pixel():
    # +X face, S = 32, pixel (row 8, col 24): sc = 24.5/16 - 1, tc = 8.5/16 - 1; the OpenGL table
    # gives the cube-frame direction (1, -tc, -sc), i.e. Blender (x, y, z) = (1, -sc, -tc):
    # up and to the right as seen looking along +X with Z up.
    sc, tc = 24.5 / 16 - 1, 8.5 / 16 - 1
    faces = equirect_to_cubemap(blob_equirect(96, (1.0, -sc, -tc), sigma=0.03), 32)
    plane = faces[0, 0]
    assert divmod(int(plane.argmax()), 32) == (8, 24)


def test_top_face_orientation():
    # +Y face (zenith): image right is +X (Blender +X), image bottom meets +Z (Blender +Y).
    d = 1 / math.sqrt(2)
    faces = equirect_to_cubemap(blob_equirect(96, (d, 0, d), sigma=0.05), 32)
    row, col = divmod(int(faces[2, 0].argmax()), 32)
    assert col == 31 and 14 <= row <= 17  # right edge, middle
    faces = equirect_to_cubemap(blob_equirect(96, (0, d, d), sigma=0.05), 32)
    row, col = divmod(int(faces[2, 0].argmax()), 32)
    assert row == 31 and 14 <= col <= 17  # bottom edge, middle


def test_equirect_cubemap_round_trip_is_close():
    eq = smooth_equirect(64)
    faces = equirect_to_cubemap(eq, 32)
    assert faces.shape == (6, 3, 32, 32)
    back = cubemap_to_equirect(faces, 64)
    assert back.shape == eq.shape
    err = (back - eq).abs()
    assert err.mean() < 1e-3 and err.max() < 5e-3  # measured: mean 2e-4, max 1.1e-3


def test_cubemap_to_equirect_reads_each_face_where_it_looks():
    faces = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 1, 8, 8).contiguous()
    eq = cubemap_to_equirect(faces, 32)[0]  # [32, 64]
    equator = 16
    for u, face in ((0.5, "+X"), (0.25, "+Z"), (0.75, "-Z"), (0.0, "-X")):
        col = int(u * 64)
        torch.testing.assert_close(eq[equator - 1:equator + 1, col], torch.full((2,), float(CUBE_FACES.index(face))))
    torch.testing.assert_close(eq[0], torch.full((64,), 2.0))  # zenith row: +Y
    torch.testing.assert_close(eq[-1], torch.full((64,), 3.0))  # nadir row: -Y


def test_layouts_round_trip_and_cross_is_continuous():
    faces = equirect_to_cubemap(smooth_equirect(64), 16)
    for layout in ("cross", "strip"):
        torch.testing.assert_close(layout_to_cubemap(cubemap_layout(faces, layout), layout), faces)
    strip = cubemap_layout(faces, "strip")
    assert strip.shape == (3, 16, 96)
    torch.testing.assert_close(strip[:, :, 32:48], faces[2])  # third face is +Y
    cross = cubemap_layout(faces, "cross", alpha=True)
    assert cross.shape == (4, 48, 64)
    assert cross[:, :16, :16].eq(0).all() and cross[:, 32:, 32:].eq(0).all()  # empty cells
    assert cross[3, 16:32].eq(1).all()  # middle row opaque
    # The middle row -X +Z +X -Z reads like the equirect: no jump at the cell borders,
    # including the wrap from -Z back to -X.
    row = cross[:3, 16:32]
    interior = (row[..., 1:] - row[..., :-1]).abs().mean()
    for border in (16, 32, 48):
        assert (row[..., border] - row[..., border - 1]).abs().mean() < 2 * interior
    assert (row[..., 0] - row[..., -1]).abs().mean() < 2 * interior
    # +Y sits above +Z, -Y below it: edges meet
    assert (cross[:3, 15, 16:32] - cross[:3, 16, 16:32]).abs().mean() < 2 * interior
    assert (cross[:3, 32, 16:32] - cross[:3, 31, 16:32]).abs().mean() < 2 * interior


def test_layout_errors_name_the_option():
    faces = torch.rand(6, 3, 4, 4)
    with pytest.raises(AlisError, match="'cross' or 'strip'"):
        cubemap_layout(faces, "vertical")
    with pytest.raises(AlisError, match="cross"):
        layout_to_cubemap(torch.rand(3, 12, 15), "cross")
    with pytest.raises(AlisError, match=r"\[6, C, S, S\]"):
        cubemap_to_equirect(torch.rand(5, 3, 4, 4), 8)
