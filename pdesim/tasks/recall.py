"""Associative recall: key-value pairs, then a query key; the class is the value bound to it.

    k₁ v₁ k₂ v₂ … k_P v_P  ?  k_q        label = index of v_q among the ``num_values`` values

The P keys of a sequence are distinct (drawn without replacement from ``num_keys``), values are
drawn freely, and the queried pair is uniform over the P pairs, so the answer sits anywhere from
the previous token to the far start of the sequence; nothing near the query reveals it, and a
model has to match the query against every key. This stands in for LRA's "Retrieval" task (AAN
document matching, which needs a real corpus); it tests the same thing, carrying information
over the whole sequence, in a form that can be generated offline and checked exactly.

Lengths are 2P + 2 with P uniform on the pair counts that fit in [min_len, seq_len]. Labels are
balanced by construction (each value is the answer for n // num_values or one more examples).
Ids: 0 pad, 1 the query mark "?", 2 … num_keys + 1 the keys, then the values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .dataset import PAD_ID, TaskData

GENERATOR_VERSION = 1
QUERY_ID = 1
KEY_OFFSET = 2


def value_offset(num_keys: int) -> int:
    """Id of value 0 (values follow the keys)."""
    return KEY_OFFSET + num_keys


def generate_recall(
    n: int,
    *,
    seq_len: int,
    seed: int,
    min_len: int | None = None,
    num_keys: int | None = None,
    num_values: int = 10,
) -> TaskData:
    """``n`` recall sequences of ``min_len``..``seq_len`` tokens (default min_len seq_len // 4; num_keys max pairs)."""
    min_len = max(4, seq_len // 4) if min_len is None else min_len
    max_pairs = (seq_len - 2) // 2
    min_pairs = max(1, -(-(min_len - 2) // 2))
    if not 1 <= min_pairs <= max_pairs:
        raise ValueError(f"lengths {min_len}..{seq_len} hold no whole number of pairs plus a query (2P + 2 tokens)")
    num_keys = max_pairs if num_keys is None else num_keys
    if num_keys < max_pairs or num_values < 2:
        raise ValueError(f"num_keys={num_keys} must be >= {max_pairs} pairs (keys are distinct) and num_values >= 2")

    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    pairs = min_pairs + (rng.random(n) * (max_pairs - min_pairs + 1)).astype(np.int64)
    keys = np.argsort(rng.random((n, num_keys)), axis=1)[:, :max_pairs]  # distinct within a row
    values = (rng.random((n, max_pairs)) * num_values).astype(np.int64)
    labels = (rows % num_values)[np.argsort(rng.random(n), kind="stable")]
    queried = (rng.random(n) * pairs).astype(np.int64)
    values[rows, queried] = labels

    body = np.empty((n, 2 * max_pairs), dtype=np.int64)
    body[:, 0::2] = KEY_OFFSET + keys
    body[:, 1::2] = value_offset(num_keys) + values
    ids = np.full((n, seq_len), PAD_ID, dtype=np.int64)
    ids[:, : 2 * max_pairs] = np.where(np.arange(2 * max_pairs) < 2 * pairs[:, None], body, PAD_ID)
    ids[rows, 2 * pairs] = QUERY_ID
    ids[rows, 2 * pairs + 1] = KEY_OFFSET + keys[rows, queried]

    token_names = ("<pad>", "?", *(f"k{k}" for k in range(num_keys)), *(f"v{v}" for v in range(num_values)))
    return TaskData(
        torch.from_numpy(ids),
        torch.from_numpy(labels),
        torch.from_numpy(2 * pairs + 2),
        vocab_size=len(token_names),
        num_classes=num_values,
        pad_id=PAD_ID,
        name="recall",
        params={
            "min_len": min_len, "max_len": seq_len, "num_keys": num_keys, "num_values": num_values,
            "version": GENERATOR_VERSION,
        },
        token_names=token_names,
    )


def evaluate_recall(ids: Sequence[int] | torch.Tensor, num_keys: int) -> int:
    """The value bound to the query key, found by scanning the pairs (independent of the generator)."""
    tokens = [int(i) for i in ids if int(i) != PAD_ID]
    mark = tokens.index(QUERY_ID)
    if mark != len(tokens) - 2:
        raise ValueError("the query mark must be the second-to-last token")
    wanted = tokens[mark + 1]
    matches = [tokens[p + 1] for p in range(0, mark, 2) if tokens[p] == wanted]
    if len(matches) != 1:
        raise ValueError(f"the query key occurs {len(matches)} times among the pairs")
    return matches[0] - value_offset(num_keys)
