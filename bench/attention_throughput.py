"""Attention-term throughput against the machine's own matrix-multiply rate.

Counts the attention term's floating-point operations (Q, K, V and output projections plus the
two N×N×d products of softmax attention) and divides by its wall time, then compares with the
rate of a plain matrix multiply of the same size measured in the same run. Target ≥ 0.6 at
N = 1024, d = 128.

    python bench/attention_throughput.py [--tokens 1024] [--dim 128] [--heads 4] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved_times

import pdesim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    n, d, b = args.tokens, args.dim, args.batch
    cfg = pdesim.PDEConfig(tokens=n, dim=d, heads=args.heads, device=args.device, dtype=args.dtype)
    attention = pdesim.MasterPDE(cfg).attention
    dtype = getattr(torch, args.dtype)
    x = torch.randn(b, n, d, device=args.device, dtype=dtype)
    # The reference does the same amount of matrix-multiply work in one large product.
    flops = b * (4 * 2 * n * d * d + 2 * 2 * n * n * d)
    square = int(round((flops / 2) ** (1 / 3)))
    lhs = torch.randn(square, square, device=args.device, dtype=dtype)
    rhs = torch.randn(square, square, device=args.device, dtype=dtype)
    torch.set_grad_enabled(False)
    times = interleaved_times({"attention": lambda: attention(x), "matmul": lambda: lhs @ rhs}, device=args.device)
    att_rate = flops / times["attention"]
    mm_rate = 2 * square**3 / times["matmul"]
    print(
        f"N={n} d={d} heads={args.heads} batch={b} dtype={args.dtype} device={args.device} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"attention term: {times['attention'] * 1e3:.2f} ms, {att_rate / 1e9:.1f} GFLOP/s")
    print(f"matmul {square}^3: {times['matmul'] * 1e3:.2f} ms, {mm_rate / 1e9:.1f} GFLOP/s")
    print(f"attention / matmul throughput ratio: {att_rate / mm_rate:.2f}")


if __name__ == "__main__":
    main()
