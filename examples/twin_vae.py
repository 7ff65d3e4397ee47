"""Two VAEs, one question: how different are their posteriors? (the main gkl_jax example)

Trains two VAEs that differ only in their random seed on scikit-learn's bundled 8x8 digits, then
compares their posteriors q_a(z|x) and q_b(z|x) on held-out digits:

1. per input, KL(q_a || q_b) from the closed form (each encoder gives a mean and a log-variance
   vector: a diagonal Gaussian; no covariance matrix and no sampling needed);
2. the same after aligning the latent axes: two independently trained VAEs do not share axes
   (their latents differ by a permutation, sign flips or a rotation), so the raw KL mostly
   measures that mismatch. ``gkl_jax.align_latents`` fits the map on paired posterior means;
3. per latent dimension, which dimensions disagree;
4. the two models as a whole: KL between their aggregate posteriors q(z) = mean_x q(z|x), and
   each model's KL-to-prior split into index-code mutual information, total correlation and
   dimension-wise KL (Monte Carlo, with standard errors);
5. a Monte Carlo cross-check of one closed-form value: sampling gives the same number, with noise.

It prints a table and writes a figure (``twin_vae.png`` in the working directory unless ``--out``
says otherwise).

Run:  python examples/twin_vae.py [--steps 3000] [--latent 8] [--out twin_vae.png]
Needs the examples extra:  pip install -e ".[examples]"
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import gkl_jax
from gkl_jax.nnx import VAE, TwinVAE


def load_digits(seed: int, test_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits scaled to [0, 1]: (x_train, x_test, y_test)."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    return x[train], x[test], data.target[test]


def train(seed: int, x_train: np.ndarray, args: argparse.Namespace) -> VAE:
    """One VAE (Bernoulli likelihood, KL to N(0, I) from gkl_jax) trained with Adam."""
    model = VAE(x_train.shape[1], args.latent, hidden=(args.hidden,), rngs=nnx.Rngs(params=seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, key):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(x, key=key))(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    bar = tqdm(range(args.steps), desc=f"VAE seed {seed}", disable=args.quiet, mininterval=0.5)
    for i in bar:
        batch = x_train[rng.integers(0, len(x_train), args.batch)]
        loss = step(model, optimizer, jnp.asarray(batch), jax.random.fold_in(key, i))
        if i % 200 == 0:
            bar.set_postfix(neg_elbo=f"{float(loss):.2f}")
    return model


def summarize(name: str, values: np.ndarray) -> str:
    return (
        f"{name:<38s} {np.mean(values):>9.3f} {np.median(values):>9.3f} "
        f"{np.min(values):>9.3f} {np.max(values):>9.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="training steps per VAE")
    ap.add_argument("--latent", type=int, default=8, help="latent size")
    ap.add_argument("--hidden", type=int, default=256, help="hidden layer width")
    ap.add_argument("--batch", type=int, default=128, help="training batch size")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--test-size", type=int, default=297, help="held-out digits")
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 1), help="the two VAEs' seeds")
    ap.add_argument("--mc-samples", type=int, default=4096, help="samples for Monte Carlo")
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("twin_vae.png"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    t0 = time.perf_counter()
    x_train, x_test, y_test = load_digits(0, args.test_size)
    vae_a = train(args.seeds[0], x_train, args)
    vae_b = train(args.seeds[1], x_train, args)
    t_train = time.perf_counter() - t0

    x = jnp.asarray(x_test)
    q_a, q_b = vae_a.encode(x), vae_b.encode(x)  # DiagGaussians, batch (n_test,), event (d,)
    held_out = [vae.elbo_terms(x, key=jax.random.key(7)) for vae in (vae_a, vae_b)]

    # 1-3: per input, raw and aligned (alignment fitted on the training digits' means)
    fit_a = vae_a.encode(jnp.asarray(x_train)).mean
    fit_b = vae_b.encode(jnp.asarray(x_train)).mean
    perm = gkl_jax.align_latents(fit_a, fit_b, method="permutation")
    rot = gkl_jax.align_latents(fit_a, fit_b, method="orthogonal")
    raw = gkl_jax.compare_posteriors(q_a, q_b)  # the pure function; TwinVAE calls it too
    twin = TwinVAE(vae_a, vae_b, alignment=perm)
    by_perm = twin(x)
    twin.alignment = rot
    by_rot = twin(x)
    best, best_name = (
        (by_perm, "permutation")
        if np.median(by_perm.kl_ab) <= np.median(by_rot.kl_ab)
        else (by_rot, "orthogonal")
    )
    best_alignment = perm if best_name == "permutation" else rot

    # 4: the models as a whole (aggregate posteriors) and the ELBO-surgery decomposition
    key = jax.random.key(11)
    k_agg, k_agg_r, k_dec_a, k_dec_b, k_mc = jax.random.split(key, 5)
    agg_raw = gkl_jax.kl_aggregate(k_agg_r, q_a, q_b, num_samples=args.mc_samples)
    agg_aligned = gkl_jax.kl_aggregate(k_agg, perm(q_a), q_b, num_samples=args.mc_samples)
    dec = [
        gkl_jax.kl_decomposition(k, q, num_samples=args.mc_samples)
        for k, q in ((k_dec_a, q_a), (k_dec_b, q_b))
    ]

    # 5: Monte Carlo cross-check of one closed-form value (held-out digit 0, aligned)
    p0 = jax.tree_util.tree_map(lambda a: a[0], perm(q_a))
    q0 = jax.tree_util.tree_map(lambda a: a[0], q_b)
    exact0 = float(gkl_jax.kl(p0, q0))
    mc0 = gkl_jax.kl_mc(
        k_mc,
        p0,
        q0,
        num_samples=args.mc_samples,
        estimator="k1",
        antithetic=False,
        control_variates=False,
    )

    kl_raw, kl_perm, kl_rot = (np.asarray(c.kl_ab) for c in (raw, by_perm, by_rot))
    print()
    print(
        f"Two VAEs (seeds {args.seeds[0]}, {args.seeds[1]}), latent {args.latent}, "
        f"{args.steps} steps each ({t_train:.0f} s); {len(x_test)} held-out digits"
    )
    print(
        f"held-out ELBO per digit: a {float(jnp.mean(held_out[0].elbo)):.2f}, "
        f"b {float(jnp.mean(held_out[1].elbo)):.2f} nats"
    )
    print()
    print(
        f"{'KL(q_a(z|x) || q_b(z|x)) per held-out digit':<38s} {'mean':>9s} {'median':>9s} "
        f"{'min':>9s} {'max':>9s}"
    )
    print(summarize("unaligned (raw latent axes)", kl_raw))
    print(summarize("aligned: permutation + signs", kl_perm))
    print(summarize("aligned: rotation (Procrustes)", kl_rot))
    print(summarize("reverse KL(b || a), best alignment", np.asarray(best.kl_ba)))
    print()
    print(
        f"alignment fit on {len(fit_a)} training digits: per-dimension correlation after "
        f"alignment, permutation {np.round(np.asarray(perm.correlation), 2)}"
    )
    print(
        f"                                                   rotation    "
        f"{np.round(np.asarray(rot.correlation), 2)}"
    )
    print()
    # per-dimension terms need diagonal posteriors on both sides: the permutation alignment
    per_dim = np.mean(np.asarray(by_perm.per_dim_ab), axis=0)
    print(
        "mean per-dimension KL (permutation-aligned, b's axes): "
        + " ".join(f"{v:.3f}" for v in per_dim)
    )
    print()
    print("The models as a whole (Monte Carlo, +- one standard error):")
    print(
        f"  KL(q_a(z) || q_b(z)) aggregate posteriors, unaligned  {agg_raw.value:8.3f} "
        f"+- {agg_raw.stderr:.3f}"
    )
    print(
        f"  KL(q_a(z) || q_b(z)) aggregate posteriors, perm.-aligned {agg_aligned.value:5.3f} "
        f"+- {agg_aligned.stderr:.3f}"
    )
    for name, d in zip("ab", dec, strict=True):
        print(
            f"  model {name}: E KL(q(z|x) || p(z)) = {float(d.kl_to_prior.value):.3f} = "
            f"MI {float(d.mutual_info.value):.3f} (+- {float(d.mutual_info.stderr):.3f}) + "
            f"TC {float(d.total_correlation.value):.3f} "
            f"(+- {float(d.total_correlation.stderr):.3f}) + dim-wise KL "
            f"{float(d.dimension_wise_kl.value):.3f} "
            f"(+- {float(d.dimension_wise_kl.stderr):.3f})"
        )
    print()
    print(
        f"Monte Carlo cross-check, digit 0 (aligned): closed form {exact0:.5f}; plain sampling "
        f"(k1, {args.mc_samples} draws) {float(mc0.value):.5f} +- {float(mc0.stderr):.5f}"
    )
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")

    plot(args, kl_raw, kl_perm, kl_rot, per_dim, q_a, q_b, best_alignment, best_name, y_test)


def plot(args, kl_raw, kl_perm, kl_rot, per_dim, q_a, q_b, alignment, name, labels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    fig.subplots_adjust(hspace=0.45)
    ax = axes[0, 0]
    lo = max(min(kl_perm.min(), kl_rot.min(), kl_raw.min()), 1e-3)
    bins = np.geomspace(lo, max(kl_raw.max(), kl_perm.max(), kl_rot.max()), 40)
    ax.hist(kl_raw, bins=bins, alpha=0.6, label=f"unaligned (median {np.median(kl_raw):.1f})")
    ax.hist(kl_perm, bins=bins, alpha=0.6, label=f"permutation (median {np.median(kl_perm):.1f})")
    ax.hist(kl_rot, bins=bins, alpha=0.6, label=f"rotation (median {np.median(kl_rot):.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("KL(q_a(z|x) || q_b(z|x)) [nats]")
    ax.set_ylabel("held-out digits")
    ax.set_title("Per-digit KL between the two posteriors")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.bar(np.arange(len(per_dim)), per_dim, color="tab:orange")
    ax.set_xlabel("latent dimension (model b's axes, permutation alignment)")
    ax.set_ylabel("mean KL term [nats]")
    ax.set_title("Which latent dimensions disagree")

    mean_a, mean_b = np.asarray(q_a.mean), np.asarray(q_b.mean)
    mapped = np.asarray(alignment.map_points(q_a.mean))
    j = int(np.argmax(np.var(mean_b, axis=0)))  # b's most used dimension
    for ax, xa, title in (
        (axes[1, 0], mean_a[:, j], f"before alignment: a's raw dimension {j}"),
        (axes[1, 1], mapped[:, j], f"after alignment ({name}): a mapped to b's axes"),
    ):
        sc = ax.scatter(xa, mean_b[:, j], c=labels, cmap="tab10", s=10)
        r = np.corrcoef(xa, mean_b[:, j])[0, 1]
        ax.set_xlabel(f"model a posterior mean, dim {j}")
        ax.set_ylabel(f"model b posterior mean, dim {j}")
        ax.set_title(f"{title}\ncorrelation with b's dimension {j}: {r:.2f}", fontsize=10)
    fig.colorbar(sc, ax=axes[1, :], label="digit")
    fig.suptitle("Two VAEs (different seeds) on held-out digits: posteriors compared with gkl_jax")
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
