"""``TrainSpec.compile`` for the Transformer classifier: its training forward pass under torch.compile.

The PDE classifier compiles inside its solver (``solvers.solve(compile=True)``, one compiled step
per state shape and grad mode). The Transformer classifier has no solver: here its whole forward
pass, embedding to logits, is compiled once (``dynamic=False``: the loop's batches all have one
shape) and warmed up before the first step, forward and backward, in both forms the loop calls
(``model(ids)`` and, on log steps, ``model(ids, return_states=True)``), so the compile time is paid
up front and reported. The parameters stay the model's own: checkpoints, probes and evaluation
read the eager module, unchanged. Where compiling is unavailable, one warning line
(``solvers.compiled.CompileUnavailableWarning``) and the run trains eager.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from solvers import compiled

from ..classifier import Classifier


def compiled_forward(model: Classifier, ids: torch.Tensor) -> tuple[Callable[..., object], float | None]:
    """(the model's forward under torch.compile, warmed up on the batch ``ids``, seconds it took), or
    (the model itself, None) after one warning line when it cannot be compiled here."""
    start = time.perf_counter()
    forward = torch.compile(model, backend=compiled.BACKEND, dynamic=False)
    try:
        forward(ids).sum().backward()
        logits, _ = forward(ids, return_states=True)
        logits.sum().backward()
    except Exception as error:  # the eager model ran this batch's shapes when it was built: this is the compiler
        compiled.not_covered(f"is unavailable here ({compiled.describe_error(error)})")
        return model, None
    finally:
        model.zero_grad(set_to_none=True)  # the warm-up's gradients are no step's
    return forward, time.perf_counter() - start
