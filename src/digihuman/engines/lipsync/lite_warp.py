"""The lite engine's renderer: a landmark-driven warp of lips and jaw, a mouth interior, blinks.

Everything is laid out in a face-aligned frame: ``u`` runs along the eye line, ``v`` down the
face, both in units of the inter-ocular distance ``E``, with the origin at the mouth centre. A
tilted head therefore opens its jaw along its own axis. For each source frame the geometry
(:class:`FaceRig`) precomputes, inside small regions of interest around the mouth/jaw and the
eyes, the pixel grid and two or three displacement basis fields. A frame with mouth openness
``o``, width ``w`` and blink closure ``b`` is then ``cv2.remap`` of the source inside the ROIs
with ``grid - c * F_close - o * F_open - w * F_width`` (and ``- b * F_blink``): a few
multiply-adds and one remap on a few thousand pixels.

The rest pose is a closed mouth. ``F_close`` brings the photo's own inner lips together on their
meeting line, a third of the way down the gap (the upper lip moves down by a third of the local
gap, the lower lip and the jaw up by two thirds, as a jaw closes a grin), and ``c``
(:attr:`MouthRig.rest_close`) is 0 when the photo's mouth is already closed and a little over 1
when it is open, smooth in between. Past 1 the lips are pressed together (they overlap by
``CLOSE_OVERLAP`` at the centre, so no sliver of teeth stays between them and a face-mesh reads
the lips as closed, not as a parted smile); the press is released over the first
``PRESS_RELEASE`` of openness (:meth:`MouthRig.close_for`). Openness then always counts from
closed lips: silence and bilabials close an open-at-rest mouth, vowels open it past its rest.
A photo that shows its mouth open also gets a larger opening travel (up to ``1 + GRIN_GAIN``
times), since a wide grin says that this mouth opens wide, and the stretched lips of a smile
read narrower than relaxed ones.

The fields fall smoothly to exactly zero well inside each ROI, so pasting the ROI back is
seamless: the feathering is in the warp itself (no cross-fade ghosting). The opening field is
discontinuous along the lips' midline (the lower lip and jaw move down, the upper lip up); the
gap between the displaced inner lips is filled with a mouth interior: the real pixels that
slide into the gap, darkened toward a dark red-brown throat, with an upper-teeth band coloured
from the photo's own teeth when it shows them, and a tongue tint at the bottom, composited with
an anti-aliased, slightly feathered mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe face-mesh (468) indices used here.
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
MOUTH_CORNERS = (61, 291)
CHIN = 152
SUBNASALE = 2
EYE_A = {  # the eye on the image's left for an upright frontal face
    "upper": (33, 246, 161, 160, 159, 158, 157, 173, 133),
    "lower": (33, 7, 163, 144, 145, 153, 154, 155, 133),
}
EYE_B = {
    "upper": (362, 398, 384, 385, 386, 387, 388, 466, 263),
    "lower": (362, 382, 381, 380, 374, 373, 390, 249, 263),
}

# Shape constants in units of the inter-ocular distance E.
JAW_DROP = 0.19  # lower lip / jaw travel at openness 1
LIP_LIFT = 0.045  # upper lip travel at openness 1
OPEN_NARROW = 0.08  # relative narrowing of the mouth when wide open
WIDTH_GAIN = 0.12  # relative width change at width ±1
TEETH_MIN, TEETH_MAX = 0.04, 0.15
# The photo's inner-lip gap at the centre (aligned units) below which the rest pose is the photo
# itself (lips already together) and above which it is fully closed; smooth in between.
CLOSE_FROM, CLOSE_TO = 0.025, 0.06
CLOSE_OVERLAP = 0.06  # how far past touching the rest pose presses an open mouth
PRESS_RELEASE = 0.2  # the openness over which that press is released
GRIN_GAIN, GRIN_FULL = 0.5, 0.3  # opening travel x (1 + GRIN_GAIN) for a photo gap >= GRIN_FULL
MEET = 0.35  # where the closed lips meet, as a fraction of the photo's gap from the upper lip


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Frame2D:
    """The face-aligned frame of one source frame: origin, unit axes (image px), scale E."""

    origin: np.ndarray  # (2,) image px
    ex: np.ndarray  # (2,) unit vector along the eye line (image left eye → right eye)
    ey: np.ndarray  # (2,) unit vector down the face
    scale: float  # E, inter-ocular distance in px

    @staticmethod
    def from_landmarks(pts: np.ndarray) -> Frame2D:
        pts = np.asarray(pts, dtype=np.float64)
        a = pts[list(EYE_A["upper"] + EYE_A["lower"])].mean(axis=0)
        b = pts[list(EYE_B["upper"] + EYE_B["lower"])].mean(axis=0)
        d = b - a
        scale = float(np.hypot(*d))
        if scale < 4.0:
            scale = max(scale, 4.0)
            d = np.array([1.0, 0.0])
        ex = d / np.hypot(*d)
        ey = np.array([-ex[1], ex[0]])
        origin = pts[[MOUTH_CORNERS[0], MOUTH_CORNERS[1], 13, 14]].mean(axis=0)
        return Frame2D(origin=origin, ex=ex, ey=ey, scale=scale)

    def to_aligned(self, p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, dtype=np.float64) - self.origin
        return np.stack([q @ self.ex, q @ self.ey], axis=-1) / self.scale

    def grid_aligned(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned (u, v) of a float32 pixel grid, in float32 (the fast path for ROIs)."""
        k = np.float32(1.0 / self.scale)
        dx = gx - np.float32(self.origin[0])
        dy = gy - np.float32(self.origin[1])
        u = (dx * np.float32(self.ex[0]) + dy * np.float32(self.ex[1])) * k
        v = (dx * np.float32(self.ey[0]) + dy * np.float32(self.ey[1])) * k
        return u, v

    def to_image(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return self.origin + self.scale * (a[..., :1] * self.ex + a[..., 1:2] * self.ey)

    def roi(
        self, u0: float, u1: float, v0: float, v1: float, width: int, height: int
    ) -> tuple[int, int, int, int]:
        """Image bounding box (x0, y0, x1, y1) of an aligned rectangle, clipped to the image."""
        corners = self.to_image(np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]]))
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


@dataclass(frozen=True)
class WarpRegion:
    """A ROI with its pixel grid and displacement basis fields (image px, float32)."""

    box: tuple[int, int, int, int]
    gx: np.ndarray
    gy: np.ndarray
    fields: tuple[tuple[np.ndarray, np.ndarray], ...]

    def maps(self, weights: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        mx, my = self.gx.copy(), self.gy.copy()
        for wt, (fx, fy) in zip(weights, self.fields, strict=True):
            if wt:
                mx -= np.float32(wt) * fx
                my -= np.float32(wt) * fy
        return mx, my


def _curve(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(a[:, 0])
    return a[order, 0], a[order, 1]


def _grid(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = box
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    return gx, gy


def _to_image_field(f: Frame2D, fu: np.ndarray, fv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.float32(f.scale)
    fx = (fu * np.float32(f.ex[0]) + fv * np.float32(f.ey[0])) * s
    fy = (fu * np.float32(f.ex[1]) + fv * np.float32(f.ey[1])) * s
    return fx.astype(np.float32, copy=False), fy.astype(np.float32, copy=False)


@dataclass(frozen=True)
class MouthRig:
    region: WarpRegion
    frame: Frame2D
    upper: np.ndarray  # (11, 2) aligned upper inner-lip points, corner to corner
    lower: np.ndarray  # (11, 2) aligned lower inner-lip points
    half_inner: float
    half_outer: float
    rest_close: float  # how much of the photo's own gap the rest pose closes (0 .. ~1.5)
    jaw_drop: float  # lower lip / jaw travel at openness 1 (aligned units)
    lip_lift: float  # upper lip travel at openness 1
    mid_u: np.ndarray  # midline samples (u, v) for interpolation
    mid_v: np.ndarray
    # Per-ROI-pixel helpers for the interior shading.
    vu: np.ndarray  # aligned v of each ROI pixel
    v_top: np.ndarray  # neutral upper inner-lip v at the pixel's u
    v_bot: np.ndarray  # neutral lower inner-lip v at the pixel's u
    lat: np.ndarray  # lens profile at the pixel's u

    def lens(self, u: np.ndarray) -> np.ndarray:
        return np.clip(1.0 - (u / self.half_inner) ** 2, 0.0, 1.0) ** 0.6

    def width_weight(self, u: np.ndarray, dv: np.ndarray) -> np.ndarray:
        r = np.sqrt((u / (1.5 * self.half_outer)) ** 2 + (dv / 0.35) ** 2)
        return 1.0 - smoothstep(0.5, 1.0, r)

    def close_for(self, openness: float) -> float:
        """The closing weight at ``openness``: the rest pose's, with any press past touching
        released as the mouth opens."""
        c = self.rest_close
        if c <= 1.0:
            return c
        return 1.0 + (c - 1.0) * max(0.0, 1.0 - openness / PRESS_RELEASE)

    def inner_polygon(self, openness: float, width: float, close: float = 0.0) -> np.ndarray:
        """The displaced inner-lip contour (image px), upper corner-to-corner then lower back:
        the photo's contour closed by ``close`` toward the midline, then opened."""
        pts = []
        for a, sign in ((self.upper, -1.0), (self.lower[::-1], 1.0)):
            u, v = a[:, 0], a[:, 1]
            lat = self.lens(u)
            move = self.lip_lift if sign < 0 else self.jaw_drop
            mid = np.interp(u, self.mid_u, self.mid_v)
            gw = self.width_weight(u, v - mid)
            du = (width * WIDTH_GAIN - openness * OPEN_NARROW) * u * gw
            v_rest = v + close * (mid - v)
            pts.append(np.stack([u + du, v_rest + sign * openness * move * lat], axis=-1))
        up, lo = pts
        order = np.argsort(up[:, 0])
        # lips closed past touching overlap: the gap is empty there, not an inverted polygon
        lo[:, 1] = np.maximum(lo[:, 1], np.interp(lo[:, 0], up[order, 0], up[order, 1]))
        return self.frame.to_image(np.concatenate(pts))


def build_mouth_rig(pts: np.ndarray, width: int, height: int) -> MouthRig:
    f = Frame2D.from_landmarks(pts)
    al = f.to_aligned(pts)
    upper, lower = al[list(UPPER_INNER)], al[list(LOWER_INNER)]
    half_inner = max(float(abs(al[308, 0] - al[78, 0])) / 2, 0.05)
    half_outer = max(float(abs(al[291, 0] - al[61, 0])) / 2, half_inner)
    v_chin = max(float(al[CHIN, 1]), 0.3)
    v_nose = min(float(al[SUBNASALE, 1]), -0.15)
    mu, top = _curve(upper)
    mu2, bot = _curve(lower)
    mid_u = mu
    mid_v = top + MEET * (np.interp(mu, mu2, bot) - top)  # the lips' meeting line
    # The ROI: wide enough for the jaw, from just under the nose to well below the chin.
    side = max(0.8, 1.6 * half_outer)
    bottom = v_chin * 1.7
    top_v = min(v_nose, -0.38) - 0.02
    box = f.roi(-side, side, top_v, bottom, width, height)
    gx, gy = _grid(box)
    u, v = f.grid_aligned(gx, gy)
    v_top = np.interp(u, mu, top).astype(np.float32)
    v_bot = np.interp(u, mu2, bot).astype(np.float32)
    mid = v_top + (v_bot - v_top) * np.float32(MEET)
    rig_lat = np.clip(1.0 - (u * np.float32(1.0 / half_inner)) ** 2, 0.0, 1.0) ** np.float32(0.6)
    # Opening: below the midline the lower lip and jaw move down; above it the upper lip lifts.
    below = v >= mid
    t = (v - mid) / max(v_chin - float(np.mean(mid_v)), 0.2)
    jaw_lat = 1.0 - smoothstep(0.38, 0.75, np.abs(u))
    to_jaw = smoothstep(0.0, 0.6, t)
    lat_mix = rig_lat + (jaw_lat - rig_lat) * to_jaw
    g_down = lat_mix * (1.0 - smoothstep(1.0, 1.6, t))
    t_up = (mid - v) / max(float(np.mean(mid_v)) - v_nose, 0.1)
    up_fade = 1.0 - smoothstep(0.0, 1.0, t_up)
    g_up = rig_lat * up_fade
    gap_c = max(float(np.interp(0.0, mu2, bot) - np.interp(0.0, mu, top)), 0.0)
    rest = float(smoothstep(CLOSE_FROM, CLOSE_TO, np.array(gap_c)))
    gain = 1.0 + GRIN_GAIN * float(smoothstep(CLOSE_FROM, GRIN_FULL, np.array(gap_c)))
    jaw_drop, lip_lift = JAW_DROP * gain, LIP_LIFT * gain
    fv_open = np.where(below, np.float32(jaw_drop) * g_down, np.float32(-lip_lift) * g_up)
    # Closing: each inner lip travels to the meeting line. The upper lip's share fades out up to
    # the nose (the skin above it stretches); the lower lip's, by the local share near the lip
    # and the centre's on the chin (the jaw rises), fades out through the chin. The fade-outs are
    # gentle enough that the map never folds, even for a wide grin.
    zero = np.zeros_like(u)
    if rest > 0.0:
        gap = np.maximum(v_bot - v_top, 0.0)
        h_up = gap * np.float32(MEET) * up_fade
        lo = gap * np.float32(1.0 - MEET)
        jaw_lo = lo + (np.float32(gap_c * (1.0 - MEET)) * jaw_lat - lo) * to_jaw
        h_down = jaw_lo * (1.0 - smoothstep(0.3, 1.5, t))
        close_field = _to_image_field(f, zero, np.where(below, -h_down, h_up))
    else:  # a closed photo never uses it
        close_field = (zero, zero)
    r = np.sqrt((u / (1.5 * half_outer)) ** 2 + ((v - mid) / 0.35) ** 2)
    gw = 1.0 - smoothstep(0.5, 1.0, r)
    fu_open = -OPEN_NARROW * u * gw
    fu_width = WIDTH_GAIN * u * gw
    region = WarpRegion(
        box=box,
        gx=gx,
        gy=gy,
        fields=(
            close_field,
            _to_image_field(f, fu_open, fv_open),
            _to_image_field(f, fu_width, zero),
        ),
    )
    return MouthRig(
        region=region,
        frame=f,
        upper=upper,
        lower=lower,
        half_inner=half_inner,
        half_outer=half_outer,
        rest_close=(1.0 + CLOSE_OVERLAP / max(gap_c, CLOSE_TO)) * rest,
        jaw_drop=jaw_drop,
        lip_lift=lip_lift,
        mid_u=mid_u,
        mid_v=mid_v,
        vu=v,
        v_top=v_top,
        v_bot=v_bot,
        lat=rig_lat,
    )


def build_eye_region(
    pts: np.ndarray, eye: Mapping[str, tuple[int, ...]], width: int, height: int
) -> WarpRegion:
    """The blink field of one eye: the upper lid slides down to the lower lid."""
    f0 = Frame2D.from_landmarks(pts)
    up = np.asarray(pts, dtype=np.float64)[list(eye["upper"])]
    lo = np.asarray(pts, dtype=np.float64)[list(eye["lower"])]
    centre = np.concatenate([up, lo]).mean(axis=0)
    f = Frame2D(origin=centre, ex=f0.ex, ey=f0.ey, scale=f0.scale)
    au, bu = _curve(f.to_aligned(up))
    al, bl = _curve(f.to_aligned(lo))
    hw = max(float(au[-1] - au[0]) / 2, 0.05)
    uc = float(au[-1] + au[0]) / 2
    h_max = max(float(np.max(np.interp(au, al, bl) - bu)), 0.02)
    box = f.roi(
        uc - hw * 1.35,
        uc + hw * 1.35,
        float(bu.min()) - 2.6 * h_max - 0.03,
        float(bl.max()) + 0.03,
        width,
        height,
    )
    gx, gy = _grid(box)
    u, v = f.grid_aligned(gx, gy)
    top = np.interp(u, au, bu).astype(np.float32)
    bot = np.interp(u, al, bl).astype(np.float32)
    h = np.clip(bot - top, 0.0, None) * (1.0 - smoothstep(0.85, 1.2, np.abs(u - uc) / hw))
    g = np.where(v >= top, 1.0, 1.0 - smoothstep(0.0, 2.4 * h_max, top - v))
    fv = np.where(v <= bot, h * g * 1.02, 0.0)
    return WarpRegion(box=box, gx=gx, gy=gy, fields=(_to_image_field(f, np.zeros_like(u), fv),))


@dataclass(frozen=True)
class MouthLook:
    """Colours of one source frame's mouth interior (from prepare)."""

    throat: np.ndarray  # (3,) RGB float
    teeth: np.ndarray  # (3,) RGB float
    teeth_strength: float
    teeth_height: float  # aligned units


def mouth_look(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Interior colours from the photo: (3, 3) float32 rows throat, teeth, (strength, height, 0)."""
    h, w = image.shape[:2]
    pts = np.asarray(pts, dtype=np.float64)
    outer = np.concatenate([pts[list(UPPER_OUTER)], pts[list(LOWER_OUTER[::-1])]])
    inner = np.concatenate([pts[list(UPPER_INNER)], pts[list(LOWER_INNER[::-1])]])
    x0, y0 = np.floor(outer.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    lips_rgb = np.array([150.0, 80.0, 80.0])
    teeth_rgb = np.array([215.0, 205.0, 190.0])
    strength, height = 0.45, TEETH_MIN
    if x1 - x0 >= 3 and y1 - y0 >= 3:
        crop = image[y0:y1, x0:x1].astype(np.float32)
        m_out = np.zeros(crop.shape[:2], np.uint8)
        m_in = np.zeros(crop.shape[:2], np.uint8)
        off = np.array([x0, y0])
        cv2.fillPoly(m_out, [np.round(outer - off).astype(np.int32)], 1)
        cv2.fillPoly(m_in, [np.round(inner - off).astype(np.int32)], 1)
        lips = (m_out > 0) & (m_in == 0)
        if lips.sum() >= 4:
            lips_rgb = crop[lips].mean(axis=0)
        luma = crop @ np.array([0.299, 0.587, 0.114], np.float32)
        inside = m_in > 0
        if inside.sum() >= 6:
            lip_l = float(lips_rgb @ np.array([0.299, 0.587, 0.114]))
            bright = inside & (luma > max(110.0, lip_l + 35.0))
            if bright.sum() >= max(4, 0.08 * inside.sum()):
                teeth_rgb = crop[bright].mean(axis=0)
                strength = 1.0
                f = Frame2D.from_landmarks(pts)
                ys, xs = np.nonzero(bright)
                av = f.to_aligned(np.stack([xs + x0, ys + y0], axis=-1))[:, 1]
                height = float(np.clip(np.ptp(av), TEETH_MIN, TEETH_MAX))
    throat = 0.2 * lips_rgb + 0.8 * np.array([52.0, 16.0, 14.0])
    return np.array([throat, teeth_rgb, [strength, height, 0.0]], dtype=np.float32)


def render_interior(
    roi: np.ndarray,
    src: np.ndarray,
    rig: MouthRig,
    look: np.ndarray,
    openness: float,
    width: float,
    close: float = 0.0,
) -> None:
    """Fill the gap between the displaced inner lips of the warped ROI (in place).

    The inside of the mouth rides with the upper lip (the upper teeth are fixed to the skull):
    where the photo's own mouth was open, its real pixels (teeth, shadow) are shown moved with
    the lip (down by the rest pose's closing, up by the opening's lift); the rest of the gap is
    a dark red-brown throat made from the real pixels that slid there, darker in the depth, with
    a tongue tint at the bottom and, when the photo shows no teeth, a faint upper-teeth band.
    """
    x0, y0 = rig.region.box[:2]
    poly = rig.inner_polygon(openness, width, close) - np.array([x0, y0])
    h, w = roi.shape[:2]
    bx0, by0 = np.floor(poly.min(axis=0)).astype(int) - 1
    bx1, by1 = np.ceil(poly.max(axis=0)).astype(int) + 2
    bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return
    mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    pts = np.round((poly - np.array([bx0, by0])) * 4).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=2)
    if not mask.any():
        return
    alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32) * (1.0 / 255.0)
    sl = (slice(by0, by1), slice(bx0, bx1))
    lat = rig.lat[sl]
    lift = openness * rig.lip_lift * lat
    v_top, v_bot = rig.v_top[sl], rig.v_bot[sl]
    src_gap = np.maximum(v_bot - v_top, 0.0)
    drop = close * MEET * src_gap  # the rest pose's closing: the upper lip's share
    top = v_top + drop - lift
    bot = v_bot - close * (1.0 - MEET) * src_gap + openness * rig.jaw_drop * lat
    v = rig.vu[sl]
    gap = np.maximum(bot - top, 1e-3)
    s = np.clip((v - top) / gap, 0.0, 1.0)
    throat, teeth, (strength, t_h, _) = look[0], look[1], look[2]
    patch = roi[sl].astype(np.float32)
    # Real pixels that slid into the gap, darkened toward the throat colour.
    base = patch * 0.2 + throat * 0.8
    shade = 0.7 + 0.3 * np.abs(2.0 * s - 1.0)  # darker in the depth of the mouth
    col = base * shade[..., None]
    tongue = smoothstep(0.6, 1.0, s) * 0.45 * smoothstep(0.05, 0.12, gap)
    col += (np.array([150.0, 62.0, 62.0], np.float32) - col) * tongue[..., None]
    if strength < 1.0:  # no teeth in the photo: a faint band where the upper teeth would be
        t_alpha = strength * (1.0 - smoothstep(0.75 * t_h, 1.1 * t_h, v - top))
        t_alpha *= smoothstep(0.05, 0.4, lat)
        col += (teeth * (0.8 + 0.2 * lat[..., None]) - col) * t_alpha[..., None]
    # The photo's own open mouth, moved up with the upper lip.
    real = (1.0 - smoothstep(0.7, 1.0, (v - top) / np.maximum(src_gap, 1e-3))) * smoothstep(
        0.01, 0.03, src_gap
    )
    if real.max() > 0.01:
        f = rig.frame
        shift = ((lift - drop) * f.scale).astype(np.float32)
        mx = rig.region.gx[sl] + shift * np.float32(f.ey[0])
        my = rig.region.gy[sl] + shift * np.float32(f.ey[1])
        own = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        col += (own.astype(np.float32) - col) * real[..., None]
    a = alpha[..., None]
    roi[sl] = np.clip(patch + (col - patch) * a, 0, 255).astype(np.uint8)
