"""The SCAIL-2 mask palette and snapping arbitrary RGB onto it.

The eight corners of the RGB cube are exactly the colours a mask may hold: black (background hidden), white
(background visible) and the six character colours. The model reads a channel as "on" only at >= 226, so a
pure colour survives its threshold and anything in between is ambiguous.
"""

from __future__ import annotations

import numpy as np

from scailflow.layout import BLACK, PERSON_COLOUR_NAMES, PERSON_COLOURS, WHITE

from .errors import TooManyPersonsError

# the six person colours, black and white: one definition, in scailflow/layout.py
PALETTE = PERSON_COLOURS
PALETTE_NAMES = PERSON_COLOUR_NAMES
ALLOWED_COLOURS = (BLACK, WHITE) + PALETTE
# the model's reader: a channel is on where value/127.5 - 1 > (225 - 127.5)/127.5, i.e. value >= 226
MODEL_ON_THRESHOLD = 226


def colour(index: int) -> tuple[int, int, int]:
    """RGB colour of character `index` (0-based, palette order)."""
    check_count(index + 1)
    return PALETTE[index]


def check_count(n: int) -> None:
    """Raise TooManyPersonsError if `n` characters cannot each get their own colour."""
    if n > len(PALETTE):
        raise TooManyPersonsError(
            f"{n} people to colour but the SCAIL-2 mask palette has only {len(PALETTE)} colours "
            f"({', '.join(PALETTE_NAMES)}); lower max_persons or edit the masks by hand"
        )


def snap_to_palette(rgb: np.ndarray, threshold: int = MODEL_ON_THRESHOLD) -> tuple[np.ndarray, int]:
    """Snap every pixel of uint8 RGB [..., 3] to black, white or a palette colour; return (snapped, n_changed).

    Each channel becomes 255 where it is >= `threshold`, else 0. With the default (226) a pixel snaps to the
    colour the model would read it as, so snapping never changes the model's input; `threshold=128` picks the
    Euclidean-nearest of the eight colours instead. `n_changed` counts pixels that were not already pure.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB [..., 3], got shape {rgb.shape}")
    snapped = np.where(rgb >= threshold, np.uint8(255), np.uint8(0)).astype(np.uint8)
    n_changed = int(np.count_nonzero((snapped != rgb).any(axis=-1)))
    return snapped, n_changed


def is_pure(rgb: np.ndarray) -> bool:
    """True if every channel of every pixel is exactly 0 or 255."""
    rgb = np.asarray(rgb)
    return bool(np.all((rgb == 0) | (rgb == 255)))
