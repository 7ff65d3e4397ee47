"""Wasserstein-2 with low-rank members: the square root, nearly identical pairs, derivatives.

The references are independent of gkl_jax's method: float64 NumPy Cholesky factors of the dense
covariances and the polar factor of ``L_q^T L_p`` from an SVD (``B = ||L_p - L_q R||_F^2``), whose
error is ~1e-16 / perturbation -- far below the float32 results it checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian, wasserstein2
from gkl_jax._src.wasserstein import _LowRankRoot
from tests.test_divergences_exact import ref_w2


def _cov(kind, params):
    params = [np.asarray(a, np.float64) for a in params]
    if kind == "lowrank":
        return params[1] @ params[1].T + np.diag(np.exp(params[2]))
    return np.diag(np.exp(params[1]))


def ref_w2_squared(kp, pp, kq, qq):
    """``||mu_p - mu_q||^2 + min_R ||L_p - L_q R||^2`` in float64 (Cholesky roots, SVD)."""
    l_p = np.linalg.cholesky(_cov(kp, pp))
    l_q = np.linalg.cholesky(_cov(kq, qq))
    u, _, vt = np.linalg.svd(l_q.T @ l_p)
    bures = np.sum((l_p - l_q @ (u @ vt)) ** 2)
    dm = np.asarray(pp[0], np.float64) - np.asarray(qq[0], np.float64)
    return float(dm @ dm + bures)


def _low_rank(rng, d, k, ld0=0.0):
    return [
        rng.standard_normal(d),
        0.7 * rng.standard_normal((d, k)),
        ld0 + 0.3 * rng.standard_normal(d),
    ]


def _f32(params):
    return [np.asarray(a, np.float32) for a in params]


def _make(kind, params):
    arrays = [jnp.asarray(a) for a in params]
    return LowRankGaussian(*arrays) if kind == "lowrank" else DiagGaussian(*arrays)


@pytest.mark.parametrize(("eps", "tol"), [(1e-2, 3e-5), (1e-3, 1e-5), (1e-4, 1e-5), (1e-6, 1e-5)])
def test_nearly_identical_low_rank_pairs_keep_their_digits(eps, tol):
    """Was ~eps_32 / perturbation relative error (3.2e-4 at 1e-4, 3.3e-2 at 1e-6): the roots
    were two separate QR factorizations, so their difference lost the perturbation's digits.
    D = 64, k = 4 (the issue's low-rank size), every parameter perturbed, means equal (only the
    Bures term). At 1e-2 the 256 perturbed factor entries add up to a rotation as large as the
    residual ``Delta - L_q Z`` it cancels against, whose float32 rounding is then ~1e-5 of it."""
    rng = np.random.default_rng(7)
    d, k = 64, 4
    for _ in range(3):
        q = _f32(_low_rank(rng, d, k))
        p = _f32(
            [
                q[0],
                q[1] * (1 + eps * rng.standard_normal((d, k))),
                q[2] + eps * rng.standard_normal(d),
            ]
        )
        want = ref_w2_squared("lowrank", p, "lowrank", q)
        got = float(wasserstein2(_make("lowrank", p), _make("lowrank", q), squared=True))
        assert abs(got - want) <= tol * want, (eps, got, want)


@pytest.mark.parametrize("eps", [1e-3, 1e-6])
def test_low_rank_near_a_diagonal(eps):
    """A diagonal Gaussian against a low-rank one whose factor is the perturbation (padded to
    the rank of the other side), both ways."""
    rng = np.random.default_rng(3)
    d = 16
    base = _f32(_low_rank(rng, d, 3))
    diag = [base[0], base[2]]
    p = _f32([base[0], eps * rng.standard_normal((d, 2)), base[2] + eps * rng.standard_normal(d)])
    for pp, qq, kp, kq in [(p, diag, "lowrank", "diag"), (diag, p, "diag", "lowrank")]:
        want = ref_w2_squared(kp, pp, kq, qq)
        got = float(wasserstein2(_make(kp, pp), _make(kq, qq), squared=True))
        assert abs(got - want) <= 1e-5 * want, (kp, kq, got, want)


def test_low_rank_pairs_of_different_ranks():
    """Rank 3 against rank 5 (two extra columns of size 1e-3: the covariances differ by ~1e-6),
    both ways; a rank-5 Gaussian against itself is exactly 0."""
    rng = np.random.default_rng(4)
    d = 16
    base = _f32(_low_rank(rng, d, 3))
    extra = 1e-3 * rng.standard_normal((d, 2))
    wide = _f32([base[0], np.concatenate([base[1], extra], 1), base[2]])
    want = ref_w2_squared("lowrank", wide, "lowrank", base)
    for pp, qq in [(wide, base), (base, wide)]:
        got = float(wasserstein2(_make("lowrank", pp), _make("lowrank", qq), squared=True))
        assert abs(got - want) <= 1e-5 * want, (got, want)
    assert float(wasserstein2(_make("lowrank", wide), _make("lowrank", wide))) == 0.0


def test_low_rank_root_is_a_square_root(x64):
    """``L = D + W T N^T`` (``T = (I + C)^{-1}``, ``C C^T = I + N^T N``) has ``L L^T = D^2 + W
    W^T`` for factors far smaller and far larger than the diagonal."""
    rng = np.random.default_rng(0)
    for scale in (1e-6, 1.0, 1e6):
        std = np.exp(0.3 * rng.standard_normal(12))
        w = scale * rng.standard_normal((12, 3))
        root = np.asarray(_LowRankRoot(jnp.asarray(std), jnp.asarray(w)).root())
        want = np.diag(std**2) + w @ w.T
        np.testing.assert_allclose(root @ root.T, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())


def test_gradient_matches_the_dense_path(x64):
    """The gradient of ``W2^2`` through the low-rank roots (and their difference form) equals the
    one through the dense Cholesky factors of the same covariances, near and far."""
    rng = np.random.default_rng(5)
    d, k = 6, 2
    q = _low_rank(rng, d, k)
    for eps in (1e-3, 1.0):
        p = [q[0] + eps * rng.standard_normal(d), q[1] + eps * rng.standard_normal((d, k)), q[2]]

        def low_rank(w, ld, p=p):
            return wasserstein2(
                LowRankGaussian(jnp.asarray(p[0]), w, ld), _make("lowrank", q), squared=True
            )

        def dense(w, ld, p=p):
            cov = w @ w.T + jnp.diag(jnp.exp(ld))
            full = FullGaussian(jnp.asarray(p[0]), jnp.linalg.cholesky(cov))
            return wasserstein2(full, _make("lowrank", q).to_full(), squared=True)

        args = (jnp.asarray(p[1]), jnp.asarray(p[2]))
        got = jax.grad(low_rank, argnums=(0, 1))(*args)
        want = jax.grad(dense, argnums=(0, 1))(*args)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(("log_diag", "eps", "tol"), [(-20.0, 1e-5, 0.1), (-20.0, 1e-3, 5e-3)])
def test_near_pairs_with_numerically_singular_covariances(log_diag, eps, tol):
    """Rank 2 + e^-20 I in d = 4 (condition ~1e9, singular to float32): the polar factor comes
    from an SVD, so the documented accuracy is ~eps_32 / perturbation, not 1e-5. The difference
    roots gave 9.8x the value here (an SVD's arbitrary rotation in the singular directions
    costs ~sigma_min^2 with them); the triangular roots keep the bound. Reference: 50 digits."""
    w = np.asarray(np.random.default_rng(11).standard_normal((4, 2)), np.float32)
    wq = np.asarray(w * (1 + eps), np.float32)
    zero, ld = np.zeros(4, np.float32), np.full(4, log_diag, np.float32)
    with mpmath.workdps(50):
        covs = []
        for f in (w, wq):
            m = mpmath.matrix(f.astype(np.float64).tolist())
            c = m * m.T
            for i in range(4):
                c[i, i] += mpmath.exp(mpmath.mpf(float(ld[i])))
            covs.append(c)
        z = mpmath.matrix([0] * 4)
        want = float(ref_w2(z, covs[0], z, covs[1])) ** 2
    p, q = LowRankGaussian(zero, w, ld), LowRankGaussian(zero, wq, ld)
    for a, b in ((p, q), (q, p)):
        got = float(wasserstein2(a, b, squared=True))
        assert abs(got - want) <= tol * want, (got, want)
