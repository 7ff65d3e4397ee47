"""The numbers of docs/estimators.md: each estimator's value, spread, error bar and cost.

p, q: 16-d diagonal Gaussians whose means and log-variances differ by 0.3 (standard normal
draws times 0.3) per coordinate; the mixture q has 10 unit-variance components at standard
normal means. Each Monte Carlo row: 200 seeds of 1024 draws; each sample-only row: 20 seeds
(5 at 10000). Times: per jitted call after compilation, median of 9 batches of 5 calls, CPU.

Run from the repository root (about 60 s on 2 cores); docs/estimators.md includes its output:

    python docs/scripts/estimator_table.py > docs/scripts/estimator_table.md
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gkl_jax import DiagGaussian, GaussianMixture, kl, kl_from_samples, kl_mc

D, DRAWS = 16, 1024
MC = {
    "default (antithetic + control variates)": {},
    "k1 plain": dict(estimator="k1", antithetic=False, control_variates=False),
    "k3 plain": dict(estimator="k3", antithetic=False),
    "k2 plain": dict(estimator="k2", antithetic=False),
}


def timed(f, *args):
    """Seconds per call: the median of 9 batches of 5 calls (the machine is shared)."""
    jax.block_until_ready(f(*args))
    batches = []
    for _ in range(9):
        start = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(f(*args))
        batches.append((time.perf_counter() - start) / 5)
    return float(np.median(batches))


def main():
    rng = np.random.default_rng(0)
    mu, lv = rng.normal(size=D), 0.5 * rng.normal(size=D)
    p = DiagGaussian(jnp.float32(mu), jnp.float32(lv))
    q = DiagGaussian(
        jnp.float32(mu + 0.3 * rng.normal(size=D)), jnp.float32(lv + 0.3 * rng.normal(size=D))
    )
    comps = DiagGaussian(jnp.float32(rng.normal(size=(10, D))), jnp.zeros((10, D)))
    mixture = GaussianMixture(jnp.zeros(10), comps)
    exact = float(kl(p, q))
    closed = jax.jit(kl)
    print(f"closed form KL(p || q) = {exact:.4f}: {timed(closed, p, q) * 1e6:.1f} us per call\n")

    print("| q | estimator | mean of 200 | spread (std) | median stderr | covered | ms / call |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for q_name, target in (("Gaussian", q), ("mixture", mixture)):
        for name, cfg in MC.items():
            if q_name == "mixture" and name.startswith("k2"):
                continue
            f = jax.jit(
                lambda key, cfg=cfg, target=target: kl_mc(key, p, target, num_samples=DRAWS, **cfg)
            )
            vals = np.array([[float(v) for v in f(jax.random.key(s))] for s in range(200)])
            hits = np.mean(np.abs(vals[:, 0] - exact) < 2 * vals[:, 1])
            cover = f"{hits:.2f}" if q_name == "Gaussian" else "-"  # a mixture: no exact value
            ms = timed(f, jax.random.key(0)) * 1e3
            print(
                f"| {q_name} | {name} | {vals[:, 0].mean():.4f} | {vals[:, 0].std():.2g} | "
                f"{np.median(vals[:, 1]):.2g} | {cover} | {ms:.2f} |"
            )

    print(
        "\n| d | N = M | method | truth | mean | bias | spread (std) | median stderr | ms / call |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for d in (4, 16):
        pd, qd = DiagGaussian(p.mean[:d], p.log_var[:d]), DiagGaussian(q.mean[:d], q.log_var[:d])
        truth = float(kl(pd, qd))
        for n in (1000, 10000):
            for method in ("knn", "gaussian"):
                f = jax.jit(
                    lambda key, method=method, n=n, pd=pd, qd=qd: kl_from_samples(
                        pd.sample(key, (n,)),
                        qd.sample(jax.random.fold_in(key, 1), (n,)),
                        method=method,
                    )
                )
                reps = 20 if n == 1000 else 5
                vals = np.array([[float(v) for v in f(jax.random.key(s))] for s in range(reps)])
                print(
                    f"| {d} | {n} | {method} | {truth:.4f} | {vals[:, 0].mean():.4f} | "
                    f"{vals[:, 0].mean() - truth:+.4f} | {vals[:, 0].std():.3f} | "
                    f"{np.median(vals[:, 1]):.3f} | {timed(f, jax.random.key(0)) * 1e3:.1f} |"
                )


if __name__ == "__main__":
    main()
