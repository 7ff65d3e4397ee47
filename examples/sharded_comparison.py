"""Two VAE encoders compared over a dataset far larger than one batch, on every device there is.

The same script runs unchanged on one CPU, on several simulated CPU devices, on one or several
GPUs, and in a multi-host job:

    python examples/sharded_comparison.py                       # one CPU / one GPU / all local GPUs
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python examples/sharded_comparison.py                   # 8 simulated CPU devices
    # multi-host (one process per host, e.g. under SLURM or on a TPU pod slice): every process
    # runs the script; jax.distributed.initialize() is called when the environment says so
    # (JAX_COORDINATOR_ADDRESS / SLURM / TPU) or with --distributed.

Two encoders (generated: a random two-layer MLP for model a, the same with perturbed weights for
model b -- a teacher and its student, no download) map inputs x to diagonal Gaussian posteriors.
Three questions, each answered with the data sharded over a 1-D device mesh:

1. per input, KL(q_a(z|x) || q_b(z|x)) and the reverse, exactly (closed form), streamed over
   ``--batches`` batches of ``--batch-size`` inputs: each batch is generated, split over the
   devices, encoded and compared on device; only the running sums come back at the end;
2. KL between the two aggregate posteriors q_a(z), q_b(z) over ``--aggregate`` inputs (Monte
   Carlo over exact mixture densities, the posterior sets sharded, a ring over the devices);
3. the same KL from samples alone: the kNN estimator, ``--knn`` samples of each aggregate, both
   sample sets sharded.

It prints a summary table and writes it to ``sharded_comparison.txt`` (and ``.json``) in the
working directory, or in ``--out``. Needs the examples extra for the progress bar (tqdm).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax
from gkl_jax import sharding


def maybe_initialize_distributed(force: bool) -> None:
    """jax.distributed.initialize() when asked to or when the environment describes a job."""
    multi = (
        os.environ.get("JAX_COORDINATOR_ADDRESS")  # set by the launcher of a generic job
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1  # SLURM: more than one task
        or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1  # Open MPI
        or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")  # a multi-host TPU slice
    )
    if force or multi:
        jax.distributed.initialize()


def make_encoders(key: jax.Array, d_in: int, hidden: int, latent: int, perturb: float):
    """Weights of model a, and model b = model a with relative noise ``perturb`` on each weight."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    a = {
        "w1": jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
        "w2": jax.random.normal(k2, (hidden, 2 * latent)) / np.sqrt(hidden),
    }
    b = {
        "w1": a["w1"] * (1.0 + perturb * jax.random.normal(k3, a["w1"].shape)),
        "w2": a["w2"] * (1.0 + perturb * jax.random.normal(k4, a["w2"].shape)),
    }
    return a, b


def encode(w, x) -> gkl_jax.DiagGaussian:
    h = jnp.tanh(x @ w["w1"])
    mean, log_var = jnp.split(h @ w["w2"], 2, axis=-1)
    return gkl_jax.DiagGaussian(mean, log_var - 1.0)


def data_batches(seed: int, batches: int, size: int, d_in: int):
    """Generated inputs: a 10-component Gaussian mixture in ``d_in`` dimensions, this process's
    rows of each batch (``size`` per process); a fresh generator per process."""
    centers = np.random.default_rng(1234).normal(size=(10, d_in)).astype(np.float32) * 2.0
    rng = np.random.default_rng([seed, jax.process_index()])
    for _ in range(batches):
        label = rng.integers(0, 10, size)
        yield centers[label] + rng.normal(size=(size, d_in)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=64, help="batches in the dataset")
    ap.add_argument("--batch-size", type=int, default=4096, help="inputs per batch (per process)")
    ap.add_argument("--input-dim", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--perturb", type=float, default=0.05, help="model b's weight noise")
    ap.add_argument("--aggregate", type=int, default=4096, help="posteriors per aggregate")
    ap.add_argument("--num-samples", type=int, default=8192, help="draws for the aggregate KL")
    ap.add_argument("--knn", type=int, default=8192, help="samples per set for the kNN estimate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."), help="output folder")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize")
    args = ap.parse_args()

    maybe_initialize_distributed(args.distributed)
    mesh = sharding.batch_mesh()  # every device of every process, one "batch" axis
    lead = jax.process_index() == 0
    if lead:
        print(
            f"{jax.device_count()} device(s) ({jax.devices()[0].platform}), "
            f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}"
        )
    w_a, w_b = make_encoders(
        jax.random.key(args.seed), args.input_dim, args.hidden, args.latent, args.perturb
    )

    # 1. the per-input comparison, streamed: encoders and closed forms run on each device's rows
    def compare(x):
        c = gkl_jax.compare_posteriors(encode(w_a, x), encode(w_b, x))
        return {
            "KL(a||b)": c.kl_ab,
            "KL(b||a)": c.kl_ba,
            "Jeffreys": c.symmetric,
            "per_dim": c.per_dim_ab,
        }

    start = time.perf_counter()
    res = sharding.stream(
        compare,
        data_batches(args.seed, args.batches, args.batch_size, args.input_dim),
        mesh=mesh,
        progress=not args.quiet,
        total=args.batches,
        desc="comparing posteriors",
    )
    t_stream = time.perf_counter() - start

    # 2. KL between the aggregate posteriors (both sets sharded, exact mixture densities)
    x = next(data_batches(args.seed + 1, 1, args.aggregate, args.input_dim))
    x = sharding.shard_batch(x[: args.aggregate // mesh.size * mesh.size], mesh)
    q_a, q_b = jax.jit(lambda x: (encode(w_a, x), encode(w_b, x)))(x)
    start = time.perf_counter()
    agg = sharding.kl_aggregate_sharded(
        jax.random.key(args.seed + 2), q_a, q_b, num_samples=args.num_samples, mesh=mesh
    )
    agg = jax.device_get(agg)
    t_agg = time.perf_counter() - start

    # 3. the same from samples alone: kNN with both sample sets sharded
    def draw(key, q, n):
        k1, k2 = jax.random.split(key)
        rows = jax.random.randint(k1, (n,), 0, q.batch_shape[0])
        return q.mean[rows] + q.std[rows] * jax.random.normal(k2, (n, q.event_size))

    z_a = draw(jax.random.key(args.seed + 3), q_a, args.knn)
    z_b = draw(jax.random.key(args.seed + 4), q_b, args.knn)
    start = time.perf_counter()
    knn = jax.device_get(sharding.kl_from_samples_sharded(z_a, z_b, mesh=mesh))
    t_knn = time.perf_counter() - start

    lines = [
        f"Posterior comparison over {res.count} inputs ({args.batches} batches), latent size "
        f"{args.latent}, {jax.device_count()} device(s); KL in nats",
        res.summary(),
        "Per-dimension mean KL(a||b): " + " ".join(f"{v:.3g}" for v in res.mean["per_dim"]),
        "",
        f"{'aggregate posteriors':<34}{'value':>10} {'stderr':>10} {'seconds':>9}",
        f"{'KL(q_a(z) || q_b(z)), exact mixture':<34}{agg.value:>10.4g} {agg.stderr:>10.2g} "
        f"{t_agg:>9.2f}",
        f"{'the same, kNN from samples':<34}{knn.value:>10.4g} {knn.stderr:>10.2g} {t_knn:>9.2f}",
        f"(streaming the comparison: {t_stream:.2f} s, {res.count / t_stream:.3g} inputs/s)",
    ]
    text = "\n".join(lines)
    if lead:
        print(text)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sharded_comparison.txt").write_text(text + "\n")
        summary = {
            "count": res.count,
            "devices": jax.device_count(),
            "mean": {k: np.asarray(v).tolist() for k, v in res.mean.items()},
            "aggregate_kl": [float(agg.value), float(agg.stderr)],
            "knn_kl": [float(knn.value), float(knn.stderr)],
            "seconds": {"stream": t_stream, "aggregate": t_agg, "knn": t_knn},
        }
        (args.out / "sharded_comparison.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
