"""Quickstart: KL between the posteriors of two VAE encoders, from (mu, log_var) alone.

The question this answers: "I have two VAEs; each encoder gives a mean vector and a variance (or
log-variance) vector per input. Can I get the KL between the two posteriors without a covariance
matrix?" Yes: a VAE posterior is a Gaussian with a *diagonal* covariance, diag(exp(log_var)), and
the KL between two such Gaussians has a closed form that needs only the four vectors. No sampling
is needed (sampling gives a noisy estimate of this same number; see
examples/sampled_vs_analytic.py).

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax

LATENT, INPUT, BATCH = 6, 32, 5


def make_encoder(key, perturb_key=None, scale=0.0):
    """A stand-in for a trained encoder: x -> (mu, log_var) through two linear heads."""
    k_mu, k_lv = jax.random.split(key)
    w_mu = jax.random.normal(k_mu, (INPUT, LATENT)) / jnp.sqrt(INPUT)
    w_lv = 0.3 * jax.random.normal(k_lv, (INPUT, LATENT)) / jnp.sqrt(INPUT)
    if perturb_key is not None:  # "the same model, trained a little differently"
        n_mu, n_lv = jax.random.split(perturb_key)
        w_mu = w_mu + scale * jax.random.normal(n_mu, w_mu.shape)
        w_lv = w_lv + scale * jax.random.normal(n_lv, w_lv.shape)

    def encode(x):
        return x @ w_mu, x @ w_lv - 1.0

    return encode


def table(title, header, rows):
    print(f"\n{title}")
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        print("  ".join(f"{v:>14.6g}" if isinstance(v, float) else f"{v:>14}" for v in row))


def main():
    k_data, k_a, k_b, k_noise = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k_data, (BATCH, INPUT))

    encoder_a = make_encoder(k_a)
    encoder_b = make_encoder(k_b)
    mu_a, log_var_a = encoder_a(x)
    mu_b, log_var_b = encoder_b(x)

    # 1. Per-example KL in both directions, straight from the arrays (one value per input).
    kl_ab = gkl_jax.kl_diag(mu_a, log_var_a, mu_b, log_var_b)
    kl_ba = gkl_jax.kl_diag(mu_b, log_var_b, mu_a, log_var_a)
    jeffreys = kl_ab + kl_ba  # symmetric KL
    table(
        "Two different encoders: KL between q_a(z|x) and q_b(z|x), per example",
        ["example", "KL(a||b)", "KL(b||a)", "Jeffreys"],
        [(i, float(kl_ab[i]), float(kl_ba[i]), float(jeffreys[i])) for i in range(BATCH)],
    )

    # 2. Per-latent-dimension terms (axis=() keeps them): where do the posteriors differ?
    terms = gkl_jax.kl_diag(mu_a, log_var_a, mu_b, log_var_b, axis=())
    table(
        "Per-dimension KL(a||b) terms for example 0 (they sum to the total above)",
        ["latent dim", "KL term"],
        [(d, float(terms[0, d])) for d in range(LATENT)],
    )

    # 3. The same thing with the pytree API, from standard deviations (the "sigma layer").
    q_a = gkl_jax.DiagGaussian.from_std(mu_a, jnp.exp(0.5 * log_var_a))
    q_b = gkl_jax.DiagGaussian.from_std(mu_b, jnp.exp(0.5 * log_var_b))
    print(f"\nkl(q_a, q_b) from std vectors, example 0: {float(gkl_jax.kl(q_a, q_b)[0]):.6g}")

    # 4. Nearly identical encoders (e.g. two seeds' worth of fine-tuning): where the textbook
    #    float32 formula loses its digits and gkl_jax does not.
    encoder_c = make_encoder(k_a, k_noise, scale=1e-5)
    mu_c, log_var_c = encoder_c(x)
    exact = gkl_jax.kl_diag(mu_a, log_var_a, mu_c, log_var_c)
    textbook = 0.5 * jnp.sum(
        log_var_c - log_var_a + (jnp.exp(log_var_a) + (mu_a - mu_c) ** 2) / jnp.exp(log_var_c) - 1,
        axis=-1,
    )
    args64 = [np.asarray(a, np.float64) for a in (mu_a, log_var_a, mu_c, log_var_c)]
    d_lv = args64[1] - args64[3]
    ref = 0.5 * np.sum(
        (args64[0] - args64[2]) ** 2 * np.exp(-args64[3]) + (np.expm1(d_lv) - d_lv), axis=-1
    )
    table(
        "Nearly identical encoders (weights perturbed by 1e-5): KL(a||c) in float32",
        ["example", "gkl_jax", "textbook f32", "float64 ref"],
        [(i, float(exact[i]), float(textbook[i]), float(ref[i])) for i in range(BATCH)],
    )


if __name__ == "__main__":
    main()
