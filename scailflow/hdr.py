"""HDR (HLG / PQ, BT.2020) to 8-bit BT.709 SDR: the standard transfer functions and a Hable tone map, in numpy.

The bundled libav has no zscale, and swscale's own HDR path is slow and far from ffmpeg's tone-mapped output, so the
conversion is done here on the decoded R'G'B' signal (swscale only applies the BT.2020 matrix and the range):

    HLG: inverse OETF -> OOTF (system gamma 1.2 at a 1000 cd/m2 display)   } display light, 1.0 = 100 cd/m2
    PQ:  EOTF (SMPTE ST 2084)                                             }
    -> BT.2020 to BT.709 primaries (linear, from the primaries' chromaticities)
    -> Hable's filmic curve on the brightest component, scaled so the signal's peak maps to white
    -> the inverse of the BT.1886 display EOTF (gamma 2.4), 8 bits

which is what ffmpeg's `zscale=t=linear:npl=100,zscale=p=bt709,tonemap=hable:desat=0,zscale=t=bt709` computes (the
tests compare the two). As zimg (zscale's library) does, the HLG OOTF is applied to each component (BT.2100 defines
it on the luminance; the two differ only in saturated highlights), so the whole signal -> light step is one table. The peak is the stream's content light level or mastering display when it carries one, else
1000 cd/m2 (HLG's nominal display peak, and what most PQ phone video is mastered to).
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

REFERENCE_WHITE = 100.0  # cd/m2 that linear 1.0 stands for (ffmpeg's tonemap convention)
DEFAULT_PEAK_NITS = 1000.0

# BT.2100 HLG constants
_HLG_A = 0.17883277
_HLG_B = 1.0 - 4.0 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4.0 * _HLG_A)
# SMPTE ST 2084 constants
_PQ_M1 = 2610.0 / 16384.0
_PQ_M2 = 2523.0 / 4096.0 * 128.0
_PQ_C1 = 3424.0 / 4096.0
_PQ_C2 = 2413.0 / 4096.0 * 32.0
_PQ_C3 = 2392.0 / 4096.0 * 32.0

_PRIMARIES = {
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
    "bt709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
}
_D65 = (0.3127, 0.3290)


def _rgb_to_xyz(primaries: str) -> np.ndarray:
    """The RGB -> XYZ matrix of a set of primaries with a D65 white."""
    xy = np.array(_PRIMARIES[primaries], np.float64)
    xyz = np.stack([xy[:, 0] / xy[:, 1], np.ones(3), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])  # columns: R, G, B
    wx, wy = _D65
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return xyz * np.linalg.solve(xyz, white)


@cache
def primaries_matrix(src: str = "bt2020", dst: str = "bt709") -> np.ndarray:
    """The linear-light RGB matrix from `src` primaries to `dst` primaries (row vectors: rgb @ M.T)."""
    return (np.linalg.inv(_rgb_to_xyz(dst)) @ _rgb_to_xyz(src)).astype(np.float32)


def hlg_inverse_oetf(e: np.ndarray) -> np.ndarray:
    """HLG signal [0, 1] -> normalised scene light [0, 1] (BT.2100)."""
    e = np.clip(e, 0.0, 1.0)
    low = e * e / 3.0
    high = (np.exp((np.maximum(e, 0.5) - _HLG_C) / _HLG_A) + _HLG_B) / 12.0
    return np.where(e <= 0.5, low, high).astype(np.float32)


def hlg_to_display(rgb_signal: np.ndarray, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """HLG R'G'B' -> display light, 1.0 = 100 cd/m2: inverse OETF, then the OOTF per component (system gamma from
    the display peak, 1.2 at 1000 cd/m2)."""
    gamma = 1.2 + 0.42 * np.log10(peak_nits / 1000.0)
    scene = hlg_inverse_oetf(rgb_signal)
    return np.power(scene, gamma, dtype=np.float32) * np.float32(peak_nits / REFERENCE_WHITE)


def pq_to_display(rgb_signal: np.ndarray) -> np.ndarray:
    """PQ R'G'B' -> display light, 1.0 = 100 cd/m2 (SMPTE ST 2084 EOTF)."""
    p = np.power(np.clip(rgb_signal, 0.0, 1.0), 1.0 / _PQ_M2, dtype=np.float32)
    lin = np.power(np.maximum(p - _PQ_C1, 0.0) / (_PQ_C2 - _PQ_C3 * p), 1.0 / _PQ_M1, dtype=np.float32)
    return lin * np.float32(10000.0 / REFERENCE_WHITE)


def _hable(x):
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (x * a + c * b) + d * e) / (x * (x * a + b) + d * f) - e / f


def tone_map_hable(rgb: np.ndarray, peak: float) -> np.ndarray:
    """Hable's curve applied to the brightest component and the colour scaled by the same factor (keeps hue);
    `peak` (in units of 100 cd/m2) maps to 1.0."""
    sig = np.maximum(rgb.max(axis=-1, keepdims=True), 1e-6)
    scale = _hable(sig) / np.float32(_hable(peak)) / sig
    return rgb * scale


def bt1886_inverse_eotf(lin: np.ndarray) -> np.ndarray:
    """Display light [0, 1] -> BT.709 video signal, for a BT.1886 display (gamma 2.4, zero black)."""
    return np.power(np.clip(lin, 0.0, 1.0), 1.0 / 2.4, dtype=np.float32)


@lru_cache(maxsize=8)
def _signal_to_light(transfer: str, peak_nits: float) -> np.ndarray:
    """Display light of every 16-bit signal value (both transfers act per component)."""
    signal = np.arange(65536, dtype=np.float32) / np.float32(65535.0)
    if transfer == "hlg":
        return hlg_to_display(signal, peak_nits)
    if transfer == "pq":
        return pq_to_display(signal)
    raise ValueError(f"unknown HDR transfer {transfer!r}")


def hdr_to_sdr(rgb48: np.ndarray, transfer: str, peak_nits: float | None = None) -> np.ndarray:
    """BT.2020 R'G'B' (uint16 full scale, as swscale's rgb48 gives it) in `transfer` "hlg" or "pq" -> BT.709 RGB uint8."""
    peak_nits = float(peak_nits or DEFAULT_PEAK_NITS)
    display = _signal_to_light(transfer, peak_nits)[rgb48]
    lin709 = display @ primaries_matrix("bt2020", "bt709").T
    mapped = tone_map_hable(lin709, peak_nits / REFERENCE_WHITE)
    return (bt1886_inverse_eotf(mapped) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def wide_gamut_to_bt709(rgb48: np.ndarray) -> np.ndarray:
    """SDR R'G'B' in BT.2020 primaries (uint16 full scale) -> BT.709 RGB uint8, through BT.1886 display light;
    colours outside BT.709 are clipped."""
    lin = _gamma_table()[rgb48] @ primaries_matrix("bt2020", "bt709").T
    return (bt1886_inverse_eotf(lin) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


@lru_cache(maxsize=1)
def _gamma_table() -> np.ndarray:
    return np.power(np.arange(65536, dtype=np.float32) / np.float32(65535.0), 2.4, dtype=np.float32)
