"""P10: what ``pdesim train`` pays beyond the model — its step against a plain hand-written PyTorch loop.

Both train the same classifier (``pdesim.train.build_model``, same sizes, same initial weights)
with AdamW, the same warm-up + cosine schedule and gradient clipping, for the same number of
steps, in the same process. The hand loop is what one would write without pdesim: forward,
cross-entropy, backward, ``clip_grad_norm_``, ``optimizer.step()``, ``scheduler.step()``, batches
by plain indexing of a seeded permutation, no logging. ``pdesim train`` does everything it
always does (per-step rows, probes every ``--log-every`` steps, the state copy behind the exact
non-finite check, the evaluation at its last step) except writing a run directory. Setup (task
data, building the model) is outside both timings. Rounds alternate the two (paired), and the
ratio pdesim / hand of each round is reported as median and range. Goal: ≤ 1.1.

    python bench/train_step.py [--steps 40] [--rounds 5] [--threads 1] [--n-eval 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from pdesim.train import TrainSpec, build_model, prepare, train
from pdesim.train.loop import make_scheduler


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def hand_loop(spec: TrainSpec, ids: torch.Tensor, labels: torch.Tensor, model: nn.Module) -> float:
    """A plain PyTorch training loop over ``spec.steps`` batches; returns the final loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = make_scheduler(optimizer, spec)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(spec.seed))
    per_epoch = len(ids) // spec.batch
    loss = torch.zeros(())
    for step in range(spec.steps):
        start = (step % per_epoch) * spec.batch
        index = order[start : start + spec.batch]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(ids[index]), labels[index])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        optimizer.step()
        scheduler.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the issue's setting)")
    parser.add_argument("--n-eval", type=int, default=32, help="validation examples (pdesim evaluates at the end)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = TrainSpec(
        steps=args.steps, n_eval=args.n_eval, log_every=args.log_every, eval_every=args.steps,
        seq_len=args.seq_len, dim=args.dim, layers=args.layers, batch=args.batch,
    )
    if args.device != "cpu":
        raise SystemExit("TrainSpec has no device field yet: this benchmark runs on the CPU only")
    setup = prepare(spec)
    data = setup.train_data

    def run_pdesim() -> float:
        fresh = prepare(spec)
        _sync(args.device)
        start = time.perf_counter()
        train(spec, setup=fresh)
        _sync(args.device)
        return time.perf_counter() - start

    def run_hand() -> float:
        torch.manual_seed(spec.seed)
        model = build_model(spec, data)
        _sync(args.device)
        start = time.perf_counter()
        hand_loop(spec, data.ids, data.labels, model)
        _sync(args.device)
        return time.perf_counter() - start

    run_pdesim(), run_hand()  # warm-up
    pdesim_times, hand_times, ratios = [], [], []
    for index in range(args.rounds):
        pair = (run_pdesim(), run_hand()) if index % 2 == 0 else tuple(reversed((run_hand(), run_pdesim())))
        pdesim_times.append(pair[0])
        hand_times.append(pair[1])
        ratios.append(pair[0] / pair[1])
    ms = 1000 / args.steps
    print(
        f"P10 train step: seq_len {spec.seq_len}, dim {spec.dim}, layers {spec.layers}, heads {spec.heads}, "
        f"batch {spec.batch}, {args.steps} steps x {args.rounds} paired rounds, {args.threads} thread(s), "
        f"log_every {spec.log_every}, n_eval {spec.n_eval}"
    )
    print(f"  pdesim train: {statistics.median(pdesim_times) * ms:.2f} ms/step (median)")
    print(f"  hand loop:    {statistics.median(hand_times) * ms:.2f} ms/step (median)")
    print(f"  ratio pdesim/hand: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
