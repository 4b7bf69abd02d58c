"""ListOps as Long Range Arena builds it: nested MIN/MAX/MED/SUM_MOD expressions over digits.

The tree distribution is LRA's ``generate_tree`` (google-research/long-range-arena,
``lra_benchmarks/data/listops.py``): a node at depth d < max_depth (the root has depth 1) is an
operator with probability ``operator_p`` = 0.25 (LRA's ``VALUE_P``; otherwise a digit leaf), an
operator takes 2..``max_args`` arguments and is closed by "]"; trees are drawn until
``min_len <= tokens <= max_len`` and kept once each (LRA collects them in a set). Tokens follow
LRA's fixed input pipeline: parentheses dropped, operators written "[MIN" "[MAX" "[MED" "[SM".
MED is LRA's ``int(np.median(args))``: for an even count, the floor of the mean of the two middle
values. The label (10 classes) is the value of the expression.

Sampling is exact rejection sampling, vectorized: a batch of trees grows level by level in
NumPy, a tree is dropped as soon as its reserved length (every open argument counts one token)
passes ``max_len`` (exact, since every subtree is at least one token), and the survivors are put
in depth-first token order by sorting nodes on a base-(max_args+2) path key. ``evaluate_listops``
is an independent stack machine over the tokens, used by the tests to check every label.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
import torch

from .dataset import PAD_ID, TaskData, pad_sequences

GENERATOR_VERSION = 1
OPERATOR_NAMES = ("[MIN", "[MAX", "[MED", "[SM")
DIGIT_OFFSET = 1  # digit d has id d + 1; id 0 pads
OPERATOR_OFFSET = DIGIT_OFFSET + 10
CLOSE_ID = OPERATOR_OFFSET + len(OPERATOR_NAMES)
TOKEN_NAMES = ("<pad>", *(str(d) for d in range(10)), *OPERATOR_NAMES, "]")
VOCAB_SIZE = len(TOKEN_NAMES)
NUM_CLASSES = 10

LRA_OPERATOR_P = 0.25
LRA_MAX_DEPTH = 10
LRA_MAX_ARGS = 10
# Batches stop this many in a row without a new example before giving up (too few distinct trees).
STALL_BATCHES = 50


def longest_tree(max_depth: int, max_args: int) -> int:
    """Token length of the largest tree the depth and argument limits allow."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _sample_batch(
    rng: np.random.Generator,
    trees: int,
    *,
    min_len: int,
    max_len: int,
    max_depth: int,
    max_args: int,
    operator_p: float,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Token arrays and labels of the trees in a batch of ``trees`` draws whose length is in range."""
    base = max_args + 2  # path digits: 0 = the node itself, 1..max_args = children, base-1 = its "]"
    tree = np.arange(trees)
    path = np.zeros(trees, dtype=np.int64)
    reserved = np.ones(trees, dtype=np.int64)
    alive = np.ones(trees, dtype=bool)
    levels = []
    for depth in range(1, max_depth + 1):
        if depth < max_depth:
            is_op = rng.random(len(tree)) <= operator_p
            if depth == 1 and min_len > 1:
                is_op[:] = True  # a leaf root (one token) is always rejected: condition on it exactly
            nargs = np.where(is_op, 2 + (rng.random(len(tree)) * (max_args - 1)).astype(np.int64), 0)
        else:
            is_op = np.zeros(len(tree), dtype=bool)
            nargs = np.zeros(len(tree), dtype=np.int64)
        reserved += np.bincount(tree, weights=nargs + is_op, minlength=trees).astype(np.int64)
        alive &= reserved <= max_len
        weight = base ** (max_depth - 1 - depth) if depth < max_depth else 0
        levels.append((tree, path, is_op, nargs, weight))
        expand = is_op & alive[tree]
        counts = nargs[expand]
        if counts.size == 0:
            break
        first_child = np.cumsum(counts) - counts
        child_index = np.arange(counts.sum()) - np.repeat(first_child, counts)
        tree = np.repeat(tree[expand], counts)
        path = np.repeat(path[expand], counts) + (child_index + 1) * weight

    accepted = alive & (reserved >= min_len)
    if not accepted.any():
        return [], np.zeros(0, dtype=np.int64)

    # Operators and digits do not affect the shape, so drawing them only for the kept trees is exact.
    kept = []
    for tree, path, is_op, nargs, weight in levels:
        keep = accepted[tree]
        symbols = rng.random(int(keep.sum()))
        operator, digit = (symbols * len(OPERATOR_NAMES)).astype(np.int64), (symbols * 10).astype(np.int64)
        symbol = np.where(is_op[keep], operator, digit)
        kept.append((tree[keep], path[keep], is_op[keep], nargs[keep], weight, symbol))

    # Values bottom-up: the children of a level's operators are the next level's nodes, in order.
    child_values = np.zeros(0, dtype=np.int64)
    for _, _, is_op, nargs, _, symbol in reversed(kept):
        values = np.where(is_op, 0, symbol)
        operators = np.flatnonzero(is_op)
        if operators.size:
            counts = nargs[operators]
            starts = np.cumsum(counts) - counts
            segment = np.repeat(np.arange(counts.size), counts)
            ordered = child_values[np.lexsort((child_values, segment))]
            median = (ordered[starts + (counts - 1) // 2] + ordered[starts + counts // 2]) // 2
            results = np.stack(
                [
                    np.minimum.reduceat(child_values, starts),
                    np.maximum.reduceat(child_values, starts),
                    median,
                    np.add.reduceat(child_values, starts) % 10,
                ]
            )
            values[operators] = results[symbol[operators], np.arange(operators.size)]
        child_values = values
    labels = child_values  # the root level holds one node per kept tree, in tree order

    # Depth-first order = sort by (tree, path key); a "]" sorts after all of its operator's children.
    node_tree, node_key, node_token = [], [], []
    for tree, path, is_op, _, weight, symbol in kept:
        node_tree += [tree, tree[is_op]]
        node_key += [path, path[is_op] + (base - 1) * weight]
        node_token += [
            np.where(is_op, OPERATOR_OFFSET + symbol, DIGIT_OFFSET + symbol),
            np.full(int(is_op.sum()), CLOSE_ID, dtype=np.int64),
        ]
    node_tree, node_key, node_token = (np.concatenate(parts) for parts in (node_tree, node_key, node_token))
    tokens = node_token[np.lexsort((node_key, node_tree))]
    sequences = np.split(tokens, np.cumsum(reserved[accepted])[:-1])
    return sequences, labels


def generate_listops(
    n: int,
    *,
    seq_len: int,
    seed: int,
    min_len: int | None = None,
    max_depth: int = LRA_MAX_DEPTH,
    max_args: int = LRA_MAX_ARGS,
    operator_p: float = LRA_OPERATOR_P,
    balance: bool = False,
    unique: bool = True,
) -> TaskData:
    """``n`` ListOps expressions of ``min_len``..``seq_len`` tokens (default min: seq_len // 4, LRA's ratio).

    ``balance=True`` keeps drawing until each of the 10 values has its share (n // 10, the
    remainder to the first classes); otherwise classes are as unbalanced as LRA's. ``unique``
    keeps each token sequence once, as LRA does.
    """
    min_len = max(1, seq_len // 4) if min_len is None else min_len
    if not 1 <= min_len <= seq_len:
        raise ValueError(f"min_len={min_len} must lie in [1, seq_len={seq_len}]")
    if max_depth < 1 or max_args < 2 or not 0.0 <= operator_p <= 1.0:
        raise ValueError(f"max_depth={max_depth} >= 1, max_args={max_args} >= 2, 0 <= operator_p={operator_p} <= 1")
    if min_len > longest_tree(max_depth, max_args):
        raise ValueError(f"no tree of depth <= {max_depth} with <= {max_args} arguments has {min_len} tokens")
    if float(max_args + 2) ** max(max_depth - 1, 0) >= 2.0**62:
        raise ValueError(f"max_depth={max_depth} and max_args={max_args} overflow the 64-bit path key")

    rng = np.random.default_rng(seed)
    quota = np.full(NUM_CLASSES, n // NUM_CLASSES) + (np.arange(NUM_CLASSES) < n % NUM_CLASSES) if balance else None
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    seen: set[bytes] = set()
    sequences: list[np.ndarray] = []
    labels: list[int] = []
    trees_per_batch = int(np.clip(2_000_000 // seq_len, 64, 8192))
    stalled = 0
    while len(sequences) < n:
        found = len(sequences)
        batch, batch_labels = _sample_batch(
            rng, trees_per_batch, min_len=min_len, max_len=seq_len,
            max_depth=max_depth, max_args=max_args, operator_p=operator_p,
        )
        for sequence, label in zip(batch, batch_labels.tolist()):
            if quota is not None and counts[label] >= quota[label]:
                continue
            if unique:
                key = sequence.tobytes()
                if key in seen:
                    continue
                seen.add(key)
            sequences.append(sequence)
            labels.append(label)
            counts[label] += 1
            if len(sequences) == n:
                break
        stalled = 0 if len(sequences) > found else stalled + 1
        if stalled >= STALL_BATCHES:
            raise ValueError(
                f"found only {len(sequences)} of {n} ListOps examples with lengths {min_len}..{seq_len} "
                f"(unique={unique}, balance={balance}); widen the length range"
            )

    ids, lengths = pad_sequences(sequences, seq_len)
    return TaskData(
        torch.from_numpy(ids),
        torch.tensor(labels, dtype=torch.long),
        torch.from_numpy(lengths),
        vocab_size=VOCAB_SIZE,
        num_classes=NUM_CLASSES,
        pad_id=PAD_ID,
        name="listops",
        params={
            "min_len": min_len, "max_len": seq_len, "max_depth": max_depth, "max_args": max_args,
            "operator_p": operator_p, "balance": balance, "unique": unique, "version": GENERATOR_VERSION,
        },
        token_names=TOKEN_NAMES,
    )


def evaluate_listops(ids: Sequence[int] | torch.Tensor) -> int:
    """The value of one tokenized expression (padding ignored), by a stack machine independent of the generator."""
    apply = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda args: int(statistics.median(args)),
        "[SM": lambda args: sum(args) % 10,
    }
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for token in (TOKEN_NAMES[int(i)] for i in ids if int(i) != PAD_ID):
        if result is not None:
            raise ValueError("tokens after the end of the expression")
        if token in apply:
            stack.append((token, []))
            continue
        if token == "]" and not stack:
            raise ValueError('a "]" without an operator')
        value = apply[stack[-1][0]](stack.pop()[1]) if token == "]" else int(token)
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    if result is None or stack:
        raise ValueError("an unfinished expression")
    return result


def to_text(ids: Sequence[int] | torch.Tensor) -> str:
    """The expression as LRA's tokens separated by spaces (padding dropped)."""
    return " ".join(TOKEN_NAMES[int(i)] for i in ids if int(i) != PAD_ID)
