"""Shaded 3D capsule skeleton render (pose-render.md section 3), sphere-traced in torch.

Every limb is a capsule of radius 21.5 mm; the scene is their union (min SDF, colour of the nearest capsule).
Rays leave a pinhole at the origin (y down) through integer pixel centres, march from t=0.1 for at most 300
steps (hit below 1e-3, step max(sdf, 1e-4), stop beyond clamp(z_max, 1e4, 2.5e4)), and hits are shaded with a
central-difference normal, a (0,0,1) light, a Blinn highlight and the clip-wide depth fade.

Speed: pixels whose ray cannot come near any capsule (outside every capsule's conservative screen rectangle)
are never marched; the rest of several frames are marched together and finished rays leave the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from scailflow.pose.skeleton import CAPSULE_RADIUS_MM, LIMB_ORDER, LIMBS, focal_length, limb_palette

T_START = 0.1
MAX_STEPS = 300
HIT_EPS = 1e-3
MIN_STEP = 1e-4
NORMAL_EPS = 1e-3
FAR_MISS = 1e6
# Rays x capsules marched at once (bounds memory: a few [R, K, 3] float tensors).
CPU_BUDGET = 2_000_000
GPU_BUDGET = 64_000_000


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (no rotation, camera at the origin)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def default(cls, height: int, width: int) -> Camera:
        """f = max(H, W) / (2 tan 27.5 deg) on both axes, principal point at (W/2, H/2)."""
        f = focal_length(height, width)
        return cls(f, f, width / 2.0, height / 2.0)

    def project(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] camera-space points -> [..., 2] pixels."""
        z = points[..., 2]
        return np.stack([self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy], -1)


@dataclass
class Capsules:
    """Limb capsules of a clip: ends a, b [T, K, 3] (mm), drawn mask [T, K], shader colour [K, 3], person [K]."""

    a: np.ndarray
    b: np.ndarray
    drawn: np.ndarray
    colour: np.ndarray
    person: np.ndarray

    def depth_range(self) -> tuple[float, float] | None:
        """(z_min, z_max) over the ends of all drawn limbs of the clip, or None when nothing is drawn."""
        if not self.drawn.any():
            return None
        z = np.concatenate([self.a[..., 2][self.drawn], self.b[..., 2][self.drawn]])
        return float(z.min()), float(z.max())


def build_capsules(joints: np.ndarray, style: str = "v2") -> Capsules:
    """[P, T, 18, 3] joints (mm; an all-zero joint is missing) -> capsules in drawing order per person.

    A limb is skipped in a frame when either end sums to 0. Colours: v2 palettes P0/P1 (P1 when alone) or the
    v1 base table, turned into shader colours c / 300 + 0.15.
    """
    joints = np.asarray(joints, np.float32)
    n_persons, n_frames = joints.shape[:2]
    a, b, drawn, colour, person = [], [], [], [], []
    for p in range(n_persons):
        palette = limb_palette(p, n_persons, style)
        for li in LIMB_ORDER:
            i, j = LIMBS[li]
            ja, jb = joints[p, :, i], joints[p, :, j]
            a.append(ja)
            b.append(jb)
            drawn.append((ja.sum(-1) != 0) & (jb.sum(-1) != 0))
            colour.append(palette[li] / 300.0 + 0.15)
            person.append(p)
    if not a:
        return Capsules(
            np.zeros((n_frames, 0, 3), np.float32),
            np.zeros((n_frames, 0, 3), np.float32),
            np.zeros((n_frames, 0), bool),
            np.zeros((0, 3), np.float32),
            np.zeros(0, np.int64),
        )
    return Capsules(
        np.stack(a, 1), np.stack(b, 1), np.stack(drawn, 1), np.array(colour, np.float32), np.array(person, np.int64)
    )


def candidate_table(
    a: np.ndarray,
    b: np.ndarray,
    drawn: np.ndarray,
    camera: Camera,
    height: int,
    width: int,
    radius: float = CAPSULE_RADIUS_MM,
    tight: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose ray may come within reach of a drawn capsule of one frame, and which capsules those are.

    Each capsule lies in the axis-aligned box spanned by its two end spheres (plus 1 mm); the projection of that
    box (in front of the camera) bounds the pixels whose ray can touch it, so the union SDF restricted to a
    pixel's candidates marches to the same hit. With an end at or behind the camera every capsule is a
    candidate everywhere. `tight` also drops rect pixels far from the capsule's projected axis (fewer rays to
    march, more numpy work: worth it on CPU). Returns (flat pixel indices [R], capsule indices [R, Kmax], -1
    padded).
    """
    ks = np.flatnonzero(drawn)
    if not len(ks):
        return np.zeros(0, np.int64), np.zeros((0, 1), np.int64)
    ends = np.stack([a[ks], b[ks]], 1)  # [k, 2, 3]
    lo, hi = ends.min(1) - radius - 1.0, ends.max(1) + radius + 1.0
    if (lo[:, 2] <= T_START).any():
        return np.arange(height * width), np.broadcast_to(ks, (height * width, len(ks))).copy()
    count = np.zeros((height, width), np.int64)
    rects = []
    # The capsule's image lies within a band around its projected axis (sphere centres project onto it); the
    # band's half-width bounds the image radius of an end sphere at its nearest depth, x1.6 for the oblique
    # stretch of off-axis spheres (up to ~1.4 at the corners of a 55 degree view), plus 2 px.
    ua, ub = camera.project(a[ks].astype(np.float64)), camera.project(b[ks].astype(np.float64))
    f = max(camera.fx, camera.fy)
    band = 1.6 * f * (radius + 1.0) / (lo[:, 2]) + 2.0
    for k, (x0, y0, z0), (x1, y1, z1), pa, pb, hw in zip(ks, lo, hi, ua, ub, band):
        xs = np.array([x0 / z0, x0 / z1, x1 / z0, x1 / z1])
        ys = np.array([y0 / z0, y0 / z1, y1 / z0, y1 / z1])
        u0 = max(int(np.floor(camera.fx * xs.min() + camera.cx)) - 1, 0)
        u1 = min(int(np.ceil(camera.fx * xs.max() + camera.cx)) + 1, width - 1)
        v0 = max(int(np.floor(camera.fy * ys.min() + camera.cy)) - 1, 0)
        v1 = min(int(np.ceil(camera.fy * ys.max() + camera.cy)) + 1, height - 1)
        if u0 <= u1 and v0 <= v1:
            if tight:
                vv, uu = np.mgrid[v0 : v1 + 1, u0 : u1 + 1]
                seg = pb - pa
                h = np.clip(((uu - pa[0]) * seg[0] + (vv - pa[1]) * seg[1]) / max(float(seg @ seg), 1e-12), 0, 1)
                near = np.hypot(uu - pa[0] - h * seg[0], vv - pa[1] - h * seg[1]) <= hw
            else:
                near = np.ones((v1 + 1 - v0, u1 + 1 - u0), bool)
            rects.append((k, v0, v1 + 1, u0, u1 + 1, near))
            count[v0 : v1 + 1, u0 : u1 + 1] += near
    kmax = int(count.max())
    if kmax == 0:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.int64)
    table = np.full((height, width, kmax), -1, np.int64)
    fill = np.zeros((height, width), np.int64)
    for k, v0, v1, u0, u1, near in rects:
        sub_t, sub_f = table[v0:v1, u0:u1], fill[v0:v1, u0:u1]
        rows, cols = np.nonzero(near)
        sub_t[rows, cols, sub_f[rows, cols]] = k
        sub_f[rows, cols] += 1
    pix = np.flatnonzero(count)
    return pix, table.reshape(-1, kmax)[pix]


def _union_sdf(
    p: torch.Tensor, A: torch.Tensor, BA: torch.Tensor, inv_dd: torch.Tensor, ok: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from points p [R, 3] to the union of capsules A + h BA ([R, K, 3]); (min sdf [R], argmin [R])."""
    pa = p[:, None, :] - A
    h = ((pa * BA).sum(-1) * inv_dd).clamp_(0.0, 1.0)
    d = torch.linalg.vector_norm(pa - h[..., None] * BA, dim=-1) - radius
    d = torch.where(ok, d, torch.full_like(d, FAR_MISS))
    return d.min(dim=1)


class Renderer:
    """Renders Capsules frame by frame: yields (shaded RGB uint8 [H, W, 3], person id int16 [H, W], -1 = none)."""

    def __init__(
        self,
        height: int,
        width: int,
        camera: Camera | None = None,
        device: torch.device | str = "cpu",
        radius: float = CAPSULE_RADIUS_MM,
        threads: int | None = 1,
    ):
        """`threads`: torch intra-op threads while marching on CPU (None keeps the global setting). One is the
        default because each march step is a few small ops: extra threads gain little and, when the cores are
        shared with other work, their spin-waiting made the render 5-8x slower in our measurements."""
        self.h, self.w = height, width
        self.threads = threads
        self.camera = camera or Camera.default(height, width)
        self.device = torch.device(device)
        self.radius = float(radius)
        self.budget = GPU_BUDGET if self.device.type == "cuda" else CPU_BUDGET
        self.tight_culling = self.device.type == "cpu"
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        dirs = np.stack(
            [(xs - self.camera.cx) / self.camera.fx, (ys - self.camera.cy) / self.camera.fy, np.ones_like(xs)], -1
        ).reshape(-1, 3)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.dirs64 = torch.from_numpy(dirs).to(self.device)
        self.dirs = self.dirs64.float()

    def render(self, caps: Capsules) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield one (rgb, person-id) pair per frame of the clip."""
        n_frames, k = caps.drawn.shape
        zr = caps.depth_range()
        if zr is None or k == 0:
            for _ in range(n_frames):
                yield np.zeros((self.h, self.w, 3), np.uint8), np.full((self.h, self.w), -1, np.int16)
            return
        z_min, z_max = zr
        fade = (max(z_min, T_START), min(z_max + 6000.0, 2e4))
        t_stop = float(np.clip(z_max, 1e4, 2.5e4))
        colour = torch.from_numpy(caps.colour).to(self.device, torch.float64)
        person = torch.from_numpy(caps.person).to(self.device)

        frame, cand = 0, None
        while frame < n_frames:
            chunk, rays, pix, kw = [], 0, [], 1
            while frame < n_frames:
                if cand is None:
                    cand = candidate_table(
                        caps.a[frame],
                        caps.b[frame],
                        caps.drawn[frame],
                        self.camera,
                        self.h,
                        self.w,
                        self.radius,
                        tight=self.tight_culling,
                    )
                if chunk and (rays + len(cand[0])) * max(kw, cand[1].shape[1]) > self.budget:
                    break  # this frame opens the next chunk
                chunk.append(frame)
                pix.append(cand)
                rays += len(cand[0])
                kw = max(kw, cand[1].shape[1])
                frame, cand = frame + 1, None
            previous = torch.get_num_threads()
            if self.device.type == "cpu" and self.threads:
                torch.set_num_threads(self.threads)
            try:
                done = self._render_chunk(caps, chunk, pix, colour, person, fade, t_stop)
            finally:
                torch.set_num_threads(previous)
            yield from done

    def _march(self, ids, g_w, pidx, A, BA, inv, ok, t_stop, hit_t, hit_g) -> None:
        """Sphere-trace rays `ids` (candidate capsules g_w [R, k]) from t=0.1; write hits into hit_t / hit_g."""
        dev = self.device
        n = ids.numel()
        t = torch.full((n,), T_START, device=dev)
        d_w = self.dirs[pidx[ids]]
        A_w, BA_w, inv_w, ok_w = A[g_w], BA[g_w], inv[g_w], ok[g_w]
        # Beyond the depth where it leaves the far face of all its candidate capsules' boxes a ray cannot hit;
        # the reference keeps marching to t_stop and hits nothing, so stopping there changes no pixel.
        z_far = torch.where(ok_w, torch.maximum(A_w[..., 2], (A_w + BA_w)[..., 2]), torch.zeros_like(A_w[..., 2]))
        t_exit = ((z_far.amax(1) + self.radius + 1.0) / d_w[:, 2]).clamp_max(t_stop)
        # Working set: rays still marching plus finished ones not yet dropped. Dropping (a gather of the
        # per-ray capsule tensors) happens only when half the set is finished, so its cost stays amortised.
        live = torch.ones(n, dtype=torch.bool, device=dev)
        n_live = n
        for _ in range(MAX_STEPS):
            if n_live == 0:
                break
            if n_live * 2 <= ids.numel():
                sel = torch.nonzero(live).squeeze(1)
                ids, t, d_w, g_w, live, t_exit = ids[sel], t[sel], d_w[sel], g_w[sel], live[sel], t_exit[sel]
                A_w, BA_w, inv_w, ok_w = A_w[sel], BA_w[sel], inv_w[sel], ok_w[sel]
            sdf, kk = _union_sdf(t[:, None] * d_w, A_w, BA_w, inv_w, ok_w, self.radius)
            hit = live & (sdf < HIT_EPS)
            if bool(hit.any()):
                hit_t[ids[hit]] = t[hit]
                hit_g[ids[hit]] = g_w[hit].gather(1, kk[hit][:, None]).squeeze(1)
            live = live & ~hit & (t <= t_exit)
            t = torch.where(live, t + sdf.clamp_min(MIN_STEP), t)
            n_live = int(live.sum())

    def _render_chunk(self, caps, chunk, pix, colour, person, fade, t_stop):
        dev = self.device
        n_caps = caps.drawn.shape[1]
        # flat capsule table of the chunk, plus one never-drawn row that the -1 padding points at
        A64 = torch.from_numpy(caps.a[chunk].reshape(-1, 3)).to(dev, torch.float64)
        B64 = torch.from_numpy(caps.b[chunk].reshape(-1, 3)).to(dev, torch.float64)
        A64 = torch.cat([A64, torch.zeros((1, 3), dtype=torch.float64, device=dev)])
        B64 = torch.cat([B64, torch.zeros((1, 3), dtype=torch.float64, device=dev)])
        ok = torch.cat([torch.from_numpy(caps.drawn[chunk].reshape(-1)), torch.zeros(1, dtype=torch.bool)]).to(dev)
        BA64 = B64 - A64
        dd = (BA64 * BA64).sum(-1)
        # a degenerate limb (both ends equal) is a sphere: h is forced to 0
        inv64 = torch.where(dd > 1e-16, 1.0 / dd.clamp_min(1e-16), torch.zeros_like(dd))
        A, BA, inv = A64.float(), BA64.float(), inv64.float()
        dummy = A64.shape[0] - 1

        kmax = max(tab.shape[1] for _, tab in pix)
        gidx_parts, fidx_parts = [], []
        for i, (p_i, tab) in enumerate(pix):
            g = np.full((len(p_i), kmax), dummy, np.int64)
            g[:, : tab.shape[1]] = np.where(tab >= 0, tab + i * n_caps, dummy)
            gidx_parts.append(g)
            fidx_parts.append(np.full(len(p_i), i, np.int64))
        gidx = torch.from_numpy(np.concatenate(gidx_parts)).to(dev)
        fidx_np = np.concatenate(fidx_parts)
        pix_np = np.concatenate([p_i for p_i, _ in pix])
        pidx = torch.from_numpy(pix_np).to(dev)
        n = pidx.numel()
        hit_t = torch.full((n,), -1.0, device=dev)
        hit_g = torch.full((n,), dummy, dtype=torch.long, device=dev)

        # On CPU most work is arithmetic: rays mostly have one candidate capsule, a few up to kmax, so groups of
        # equal width are marched apart and the padding of the widest rays is not paid by all. On GPU the
        # per-step launch cost dominates and one march is faster.
        width_of = (gidx != dummy).sum(1)
        groups = ((0, 1), (2, 2), (3, gidx.shape[1])) if dev.type == "cpu" else ((0, gidx.shape[1]),)
        for lo_w, hi_w in groups:
            rows = torch.nonzero((width_of >= lo_w) & (width_of <= hi_w)).squeeze(1)
            if rows.numel():
                self._march(rows, gidx[rows, : max(hi_w, 1)], pidx, A, BA, inv, ok, t_stop, hit_t, hit_g)

        hit_rows = torch.nonzero(hit_t >= 0).squeeze(1)
        rgb_hit = torch.zeros((0, 3), dtype=torch.float64, device=dev)
        cap_hit = (hit_g[hit_rows] % n_caps) if n_caps else hit_g[hit_rows]
        if hit_rows.numel():
            d64 = self.dirs64[pidx[hit_rows]]
            p64 = hit_t[hit_rows].double()[:, None] * d64
            g = gidx[hit_rows]
            args = (A64[g], BA64[g], inv64[g], ok[g], self.radius)
            grad = []
            for axis in range(3):
                e = torch.zeros(3, dtype=torch.float64, device=dev)
                e[axis] = NORMAL_EPS
                grad.append(_union_sdf(p64 + e, *args)[0] - _union_sdf(p64 - e, *args)[0])
            nrm = torch.stack(grad, 1)
            nrm = nrm / torch.linalg.vector_norm(nrm, dim=1, keepdim=True).clamp_min(1e-30)
            diff = (-nrm[:, 2]).clamp_min(0.0)
            half = -d64 + torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64, device=dev)
            half = half / torch.linalg.vector_norm(half, dim=1, keepdim=True).clamp_min(1e-30)
            spec = (nrm * half).sum(1).clamp_min(0.0) ** 32
            near, far = fade
            depth = (1.0 - (p64[:, 2] - near) / (far - T_START)).clamp(0.0, 1.0)
            base = colour[cap_hit] * (0.3 + 0.7 * diff)[:, None] * depth[:, None]
            rgb_hit = (base + (0.5 * spec * depth)[:, None]).clamp(0.0, 1.0)
        rgb8 = (rgb_hit * 255.0).to(torch.uint8).cpu().numpy()
        pid_hit = person[cap_hit].cpu().numpy().astype(np.int16)
        rows = hit_rows.cpu().numpy()
        done = []
        for i, _ in enumerate(chunk):
            img = np.zeros((self.h * self.w, 3), np.uint8)
            ids_img = np.full(self.h * self.w, -1, np.int16)
            sel = fidx_np[rows] == i
            img[pix_np[rows[sel]]] = rgb8[sel]
            ids_img[pix_np[rows[sel]]] = pid_hit[sel]
            done.append((img.reshape(self.h, self.w, 3), ids_img.reshape(self.h, self.w)))
        return done
