"""A Pathfinder-style task: are the two marked pixels the ends of one curve? (2 classes)

After Linsley et al. (2018) and LRA's Pathfinder-32: an S x S image holds two target curves of
``path_length`` pixels and ``distractors`` shorter curves. In a positive example (label 1) both
ends of one target curve are marked; in a negative example (label 0) one end of each target
curve is. Both classes therefore show the same curves and two marks, and only following a curve
tells them apart. Labels are exactly half 0 and half 1 (one extra 0 when n is odd).

A curve is a chain of pixels, each a step to one of the 8 neighbours with the heading turning by
at most 45 degrees per step (probability ``turn_prob`` of a turn), so a curve is 8-connected and
smooth. A pixel is only taken if none of its 8 neighbours belongs to another curve: different
curves are always at least one background pixel apart, which makes "connected" the same as
"same curve" for an 8-neighbourhood flood fill. A curve that gets stuck is erased and redrawn;
an image whose curves do not fit is started again. Curves are solid, not dashed as in the
original, exactly so that the flood fill can confirm every label.

The image is flattened row by row into S*S tokens: background 1, curve 2, marked end 3 (0 pads,
and never occurs since every sequence has the full length).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from functools import lru_cache

import torch

from .dataset import PAD_ID, TaskData

# 2: when blocked, a straight step falls back to a random side (1 always tried the right first).
GENERATOR_VERSION = 2
BACKGROUND, PATH, ENDPOINT = 1, 2, 3
TOKEN_NAMES = ("<pad>", "background", "path", "endpoint")
VOCAB_SIZE = len(TOKEN_NAMES)
NUM_CLASSES = 2
# Headings in circular order, so heading +- 1 is a 45-degree turn.
HEADINGS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
EMPTY = -1
CURVE_ATTEMPTS = 50
IMAGE_ATTEMPTS = 1000


@lru_cache(maxsize=8)
def _neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    """For each flat pixel index, the flat indices of its (up to 8) neighbours inside the image."""
    table = []
    for row in range(size):
        for col in range(size):
            table.append(
                tuple(
                    (row + dr) * size + col + dc
                    for dr, dc in HEADINGS
                    if 0 <= row + dr < size and 0 <= col + dc < size
                )
            )
    return tuple(table)


def _free_for(pixel: int, curve: int, owner: list[int], neighbours: Sequence[int], allowed: Sequence[int]) -> bool:
    """``pixel`` is empty and touches no other curve, nor its own curve except at ``allowed``."""
    if owner[pixel] != EMPTY:
        return False
    return all(owner[other] == EMPTY or other in allowed for other in neighbours)


def _draw_curve(
    rng: random.Random, owner: list[int], curve: int, length: int, size: int, turn_prob: float
) -> list[int] | None:
    """The flat pixels of a new curve of ``length`` pixels, marked in ``owner``; None if it never fits."""
    neighbours = _neighbours(size)
    for _ in range(CURVE_ATTEMPTS):
        start = rng.randrange(size * size)
        if not _free_for(start, curve, owner, neighbours[start], ()):
            continue
        heading = rng.randrange(len(HEADINGS))
        pixels = [start]
        owner[start] = curve
        while len(pixels) < length:
            draw = rng.random()
            # The drawn turn first; when blocked, the other ways on (in a random order) before giving up.
            if draw < turn_prob:
                turn = -1 if draw < turn_prob / 2 else 1
                options = (turn, 0, -turn)
            else:
                side = -1 if draw < (1 + turn_prob) / 2 else 1
                options = (0, side, -side)
            row, col = divmod(pixels[-1], size)
            for option in options:
                dr, dc = HEADINGS[(heading + option) % len(HEADINGS)]
                r, c = row + dr, col + dc
                if 0 <= r < size and 0 <= c < size:
                    pixel = r * size + c
                    if _free_for(pixel, curve, owner, neighbours[pixel], pixels[-2:]):
                        heading = (heading + option) % len(HEADINGS)
                        pixels.append(pixel)
                        owner[pixel] = curve
                        break
            else:
                break
        if len(pixels) == length:
            return pixels
        for pixel in pixels:
            owner[pixel] = EMPTY
    return None


def draw_image(
    rng: random.Random,
    size: int,
    label: int,
    *,
    path_length: int,
    distractors: int,
    distractor_length: int,
    turn_prob: float,
) -> list[int]:
    """One flattened image (size*size token ids) whose marks are connected iff ``label`` == 1."""
    lengths = [path_length, path_length] + [distractor_length] * distractors
    for _ in range(IMAGE_ATTEMPTS):
        owner = [EMPTY] * (size * size)
        curves = []
        for curve, length in enumerate(lengths):
            pixels = _draw_curve(rng, owner, curve, length, size, turn_prob)
            if pixels is None:
                break
            curves.append(pixels)
        else:
            first, second = curves[0], curves[1]
            if label == 1:
                marks = (first[0], first[-1])
            else:
                marks = (first[0] if rng.random() < 0.5 else first[-1], second[0] if rng.random() < 0.5 else second[-1])
            image = [BACKGROUND if o == EMPTY else PATH for o in owner]
            for pixel in marks:
                image[pixel] = ENDPOINT
            return image
    raise ValueError(
        f"could not fit {len(lengths)} curves of lengths {lengths} into a {size}x{size} image; "
        "use shorter or fewer curves"
    )


def generate_pathfinder(
    n: int,
    *,
    seq_len: int,
    seed: int,
    path_length: int | None = None,
    distractors: int | None = None,
    distractor_length: int | None = None,
    turn_prob: float = 0.3,
) -> TaskData:
    """``n`` flattened images of side sqrt(seq_len) (default curves: targets S pixels, S//8 + 1 of S//2)."""
    size = math.isqrt(seq_len)
    if size * size != seq_len or size < 6:
        raise ValueError(f"seq_len={seq_len} must be the square of an image side >= 6")
    path_length = size if path_length is None else path_length
    distractors = size // 8 + 1 if distractors is None else distractors
    distractor_length = max(2, size // 2) if distractor_length is None else distractor_length
    if path_length < 2 or distractor_length < 1 or distractors < 0 or not 0.0 <= turn_prob <= 1.0:
        raise ValueError(
            f"path_length={path_length} >= 2, distractor_length={distractor_length} >= 1, "
            f"distractors={distractors} >= 0, 0 <= turn_prob={turn_prob} <= 1"
        )
    rng = random.Random(seed)
    labels = [index % 2 for index in range(n)]
    rng.shuffle(labels)
    images = [
        draw_image(
            rng, size, label, path_length=path_length, distractors=distractors,
            distractor_length=distractor_length, turn_prob=turn_prob,
        )
        for label in labels
    ]
    return TaskData(
        torch.tensor(images, dtype=torch.long).reshape(n, seq_len),
        torch.tensor(labels, dtype=torch.long),
        torch.full((n,), seq_len, dtype=torch.long),
        vocab_size=VOCAB_SIZE,
        num_classes=NUM_CLASSES,
        pad_id=PAD_ID,
        name="pathfinder",
        params={
            "size": size, "path_length": path_length, "distractors": distractors,
            "distractor_length": distractor_length, "turn_prob": turn_prob, "version": GENERATOR_VERSION,
        },
        token_names=TOKEN_NAMES,
    )


def endpoints_connected(ids: Sequence[int] | torch.Tensor, size: int) -> bool:
    """Whether the two marked pixels of a flattened image are joined through curve pixels (8-neighbourhood)."""
    image = [int(i) for i in ids]
    marks = [pixel for pixel, token in enumerate(image) if token == ENDPOINT]
    if len(marks) != 2:
        raise ValueError(f"an image needs exactly 2 marked pixels, not {len(marks)}")
    neighbours = _neighbours(size)
    reached, frontier = {marks[0]}, deque([marks[0]])
    while frontier:
        for other in neighbours[frontier.popleft()]:
            if other not in reached and image[other] in (PATH, ENDPOINT):
                reached.add(other)
                frontier.append(other)
    return marks[1] in reached


def render(ids: Sequence[int] | torch.Tensor, size: int) -> str:
    """The image as text rows: '.' background, '#' curve, 'O' marked end."""
    glyphs = {BACKGROUND: ".", PATH: "#", ENDPOINT: "O", PAD_ID: " "}
    flat = [glyphs[int(i)] for i in ids]
    return "\n".join("".join(flat[row * size : (row + 1) * size]) for row in range(size))
