"""Cost of gkl_jax inside a training step, and of the aggregate-posterior estimators.

1. A jitted Flax NNX VAE train step (digits-sized: 64 -> 256 -> 2 x latent 8, batch 128, Adam),
   whose loss takes its KL term from ``gkl_jax.kl_diag_standard`` (what ``gkl_jax.nnx.VAE``
   does) against the same step with the hand-written ``-0.5 * sum(1 + lv - mu^2 - e^lv)``.
   Both steps are timed interleaved (round-robin), as medians of back-to-back calls.
2. ``kl_aggregate``, ``kl_aggregate_prior`` and ``kl_decomposition`` on N = 10000 posteriors,
   d = 16 (jitted, after compilation).

Run:  python benchmarks/vae_step.py [--out benchmarks/results/vae_step.md]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gkl_jax
from gkl_jax.nnx import VAE


def hand_kl(mean, log_var):
    return -0.5 * jnp.sum(1.0 + log_var - mean * mean - jnp.exp(log_var), axis=-1)


def make_step(kl_term):
    """A train step whose loss is reconstruction + kl_term(mean, log_var), nothing else differs."""

    def loss_fn(model, x, key):
        q = model.encode(x)
        z = q.sample(key)
        rec = model.log_likelihood(x, model.decode(z))
        return jnp.mean(kl_term(q.mean, q.spread) - rec)

    @nnx.jit
    def step(model, optimizer, x, key):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, key)
        optimizer.update(model, grads)
        return loss

    return step


def time_steps(args) -> dict[str, float]:
    x = jnp.asarray((np.random.default_rng(0).random((args.batch, 64)) < 0.3).astype(np.float32))
    cases = {}
    for name, term in (("hand-written KL", hand_kl), ("gkl_jax.kl_diag_standard", None)):
        model = VAE(64, args.latent, hidden=(256,), rngs=nnx.Rngs(params=0))
        opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        step = make_step(term or gkl_jax.kl_diag_standard)
        jax.block_until_ready(step(model, opt, x, jax.random.key(0)))
        cases[name] = (step, model, opt)
    samples = {name: [] for name in cases}
    key = jax.random.key(1)
    for r in range(args.rounds):
        for name, (step, model, opt) in cases.items():
            t0 = time.perf_counter()
            for i in range(args.calls):
                out = step(model, opt, x, jax.random.fold_in(key, r * args.calls + i))
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / args.calls * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def time_aggregate(n: int, d: int, num_samples: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    q_a = gkl_jax.DiagGaussian(rng.normal(size=(n, d)), rng.normal(scale=0.3, size=(n, d)) - 1)
    q_b = gkl_jax.DiagGaussian(rng.normal(size=(n, d)), rng.normal(scale=0.3, size=(n, d)) - 1)
    key = jax.random.key(0)
    fns = {
        "kl_aggregate": jax.jit(
            lambda k, a, b: gkl_jax.kl_aggregate(k, a, b, num_samples=num_samples)
        ),
        "kl_aggregate_prior": jax.jit(
            lambda k, a, b: gkl_jax.kl_aggregate_prior(k, a, num_samples=num_samples)
        ),
        "kl_decomposition": jax.jit(
            lambda k, a, b: gkl_jax.kl_decomposition(k, a, num_samples=num_samples)
        ),
    }
    out = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn(key, q_a, q_b))
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.fold_in(key, i), q_a, q_b))
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--calls", type=int, default=200, help="steps per timing sample")
    ap.add_argument("--rounds", type=int, default=11, help="interleaved timing samples")
    ap.add_argument("--n", type=int, default=10000, help="posteriors for the aggregate KLs")
    ap.add_argument("--dim", type=int, default=16, help="latent size for the aggregate KLs")
    ap.add_argument("--samples", type=int, default=4096, help="Monte Carlo draws")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()

    steps = time_steps(args)
    base = steps["hand-written KL"]
    agg = time_aggregate(args.n, args.dim, args.samples)
    lines = [
        f"# gkl_jax in a training step and on aggregate posteriors (CPU, jax {jax.__version__})",
        "",
        f"Flax NNX VAE train step, 64 -> 256 -> latent {args.latent}, batch {args.batch}, Adam, "
        f"jitted; median of {args.rounds} interleaved samples of {args.calls} steps.",
        "",
        "| KL term in the loss | us / step | ratio |",
        "|---|---:|---:|",
    ]
    for name, t in steps.items():
        lines.append(f"| {name} | {t:.1f} | {t / base:.3f} |")
    lines += [
        "",
        f"Aggregate posteriors, N = {args.n}, d = {args.dim}, {args.samples} draws, jitted "
        "(after compilation), median of 3:",
        "",
        "| function | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {t:.2f} |" for name, t in agg.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
