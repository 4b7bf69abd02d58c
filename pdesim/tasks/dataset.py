"""The container every task generator returns, and its on-disk cache.

A ``TaskData`` holds ``n`` right-padded token sequences: ``ids`` (n, L) with id 0 reserved for
padding in every task, so ``ids != pad_id`` is exactly the valid mask the classifier builds,
``labels`` (n,), and the true ``lengths`` (n,). It is a ``torch.utils.data.Dataset`` of
(ids, label) pairs that also fetches a whole batch at once (given a list of indices): its splits are
``random_split``, its mini-batches a ``DataLoader`` over a seeded ``RandomSampler`` in a
``BatchSampler``, and padding is ``pad_sequence``. It counts classes too.

The cache is one NumPy ``.npz`` per parameter set, named by a hash of every parameter that
shapes the data (generator version included), written to a temporary file and renamed into
place so that a crash or a concurrent writer never leaves a half-written file under the final
name. Metadata travels as a JSON string inside the archive, so loading needs no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, random_split

PAD_ID = 0
CACHE_ENV = "PDESIM_CACHE"
# Bump when the archive layout changes; each generator carries its own version for its data.
CACHE_FORMAT = 1


@dataclass
class TaskData(Dataset):
    """Right-padded token sequences with class labels (id ``pad_id`` = 0 only ever pads)."""

    ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    vocab_size: int
    num_classes: int
    pad_id: int = PAD_ID
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    token_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.ids, self.labels, self.lengths = (t.to(torch.long) for t in (self.ids, self.labels, self.lengths))
        if self.ids.dim() != 2 or self.labels.shape != (len(self.ids),) or self.lengths.shape != self.labels.shape:
            raise ValueError(
                f"ids {tuple(self.ids.shape)}, labels {tuple(self.labels.shape)} and lengths "
                f"{tuple(self.lengths.shape)} must be (n, L), (n,) and (n,)"
            )
        if self.token_names and len(self.token_names) != self.vocab_size:
            raise ValueError(f"{len(self.token_names)} token names for a vocabulary of {self.vocab_size}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Example ``index`` (ids (L,), label), or, given a list of indices, that batch in one indexing."""
        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.ids[index], self.labels[index]

    @property
    def max_len(self) -> int:
        return self.ids.shape[1]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> TaskData:
        """The examples at ``indices`` (in that order), with the same vocabulary and metadata."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return TaskData(
            self.ids[index], self.labels[index], self.lengths[index], self.vocab_size, self.num_classes,
            self.pad_id, self.name, dict(self.params), self.token_names,
        )

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[TaskData, ...]:
        """Disjoint random parts with the given fractions of the examples (they must sum to 1)."""
        fractions = [float(f) for f in fractions]
        if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
            raise ValueError(f"fractions {fractions} must be non-negative and sum to 1")
        bounds = np.round(np.cumsum([0.0, *fractions]) * len(self)).astype(int)
        bounds[-1] = len(self)
        parts = random_split(self, np.diff(bounds).tolist(), generator=torch.Generator().manual_seed(seed))
        return tuple(self.subset(part.indices) for part in parts)

    def batches(
        self, batch_size: int, *, seed: int, shuffle: bool = True, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (ids (B, L), labels (B,)); every example appears exactly once (unless dropped)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        sampler = (
            RandomSampler(self, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(self)
        )
        # the BatchSampler's index lists go to __getitem__ whole (batch_size=None): one gather per batch
        batches = BatchSampler(sampler, batch_size, drop_last)
        yield from DataLoader(self, sampler=batches, batch_size=None, collate_fn=_as_batch)

    def class_counts(self) -> torch.Tensor:
        """(num_classes,) number of examples per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description: sizes, length range and class fractions."""
        counts = self.class_counts()
        return {
            "name": self.name,
            "examples": len(self),
            "max_len": self.max_len,
            "length_min": int(self.lengths.min()) if len(self) else 0,
            "length_mean": float(self.lengths.float().mean()) if len(self) else 0.0,
            "length_max": int(self.lengths.max()) if len(self) else 0,
            "vocab_size": self.vocab_size,
            "num_classes": self.num_classes,
            "class_fractions": [round(float(c) / max(len(self), 1), 4) for c in counts],
            "params": self.params,
        }

    def decode(self, index: int) -> list[str]:
        """The token names of example ``index`` without its padding (needs ``token_names``)."""
        return [self.token_names[i] for i in self.ids[index, : int(self.lengths[index])].tolist()]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate step: ``__getitem__`` of an index list already returns the batch stacked."""
    return batch


def pad_sequences(
    sequences: Sequence[Sequence[int]], max_len: int, pad_id: int = PAD_ID
) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_len) int64 ids right-padded with ``pad_id``, and the (n,) lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if len(sequences) and lengths.max() > max_len:
        raise ValueError(f"a sequence of length {lengths.max()} exceeds max_len={max_len}")
    # pad_sequence pads to the longest; one all-padding row of max_len fixes the width, then goes
    rows = [torch.as_tensor(np.asarray(s, dtype=np.int64)) for s in sequences]
    padded = pad_sequence([*rows, torch.zeros(max_len, dtype=torch.long)], batch_first=True, padding_value=pad_id)
    return padded[:-1].numpy().copy(), lengths


def default_cache_dir() -> Path:
    """``$PDESIM_CACHE`` if set, else ``~/.cache/pdesim/tasks``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "pdesim" / "tasks"


def cache_key(description: dict[str, Any]) -> str:
    """A short hash of every parameter that shapes the data (JSON with sorted keys)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def save_task(data: TaskData, path: Path) -> None:
    """Write ``data`` to ``path`` (.npz) atomically: temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    id_dtype = np.int16 if data.vocab_size <= np.iinfo(np.int16).max else np.int32
    meta = {
        "vocab_size": data.vocab_size,
        "num_classes": data.num_classes,
        "pad_id": data.pad_id,
        "name": data.name,
        "params": data.params,
        "token_names": list(data.token_names),
    }
    temporary = path.parent / f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    # os.open rather than mkstemp: the file gets the umask's permissions, not 0600, so a shared cache stays readable.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(
                file,
                ids=data.ids.numpy().astype(id_dtype),
                labels=data.labels.numpy().astype(np.int32),
                lengths=data.lengths.numpy().astype(np.int32),
                meta=np.array(json.dumps(meta)),
            )
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_task(path: Path) -> TaskData:
    """Read a file written by ``save_task`` (no pickle: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        return TaskData(
            torch.from_numpy(archive["ids"].astype(np.int64)),
            torch.from_numpy(archive["labels"].astype(np.int64)),
            torch.from_numpy(archive["lengths"].astype(np.int64)),
            vocab_size=meta["vocab_size"],
            num_classes=meta["num_classes"],
            pad_id=meta["pad_id"],
            name=meta["name"],
            params=meta["params"],
            token_names=tuple(meta["token_names"]),
        )


def cached(description: dict[str, Any], build: Callable[[], TaskData], cache_dir: str | Path | None) -> TaskData:
    """The data for ``description`` from the cache, else ``build()`` it and store it."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"{description.get('name', 'task')}-{cache_key(description)}.npz"
    if path.exists():
        try:
            return load_task(path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged or foreign file: regenerate and overwrite it
    data = build()
    save_task(data, path)
    return data
