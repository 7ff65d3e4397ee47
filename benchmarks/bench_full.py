"""Full-covariance and low-rank KL: speed and accuracy against peers, side by side in one run.

Speed (jit, median of interleaved calls after compilation, float32):
* KL(p || q) for a batch of B = 256 full-covariance pairs with D = 128, from Cholesky factors:
  gkl_jax.kl_full, gkl_jax.kl on FullGaussian, distrax MultivariateNormalTri, TFP (JAX)
  MultivariateNormalTriL, torch MultivariateNormal(scale_tril) where installed, and the plain
  jnp formula with XLA's triangular solve (the algorithm distrax and TFP use);
* value + gradient with respect to all four inputs (gkl_jax, distrax and TFP; the peers'
  gradients run in a subprocess with a time limit, because XLA's batched triangular-solve
  gradient becomes extremely slow at this batch size on CPU);
* kl_full called eagerly vs jitted, B = 1024, D = 64, with the first-call (compile) time;
* low rank, D = 4096, k = 16 (never densified), with its error against the dense float64 KL.

Accuracy: max relative error of float32 results against the float64 KL of the same float32
inputs (SciPy triangular solves in difference form), for pairs p = q * (1 + delta * noise),
D = 16 and 128.

Run:  python benchmarks/bench_full.py [--batch 256] [--dim 128] [--repeats 20]
          [--out benchmarks/results/full.md]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sl

import gkl_jax

# ---------------------------------------------------------------------------------------------
# implementations
# ---------------------------------------------------------------------------------------------


def _handwritten(mp, lp, mq, lq):
    """The textbook Cholesky formula with XLA's triangular solve (what distrax/TFP compute)."""
    m = jax.lax.linalg.triangular_solve(lq, lp, left_side=True, lower=True)
    z = jax.lax.linalg.triangular_solve(lq, (mq - mp)[..., None], left_side=True, lower=True)
    d = mp.shape[-1]
    diag_q, diag_p = jnp.diagonal(lq, 0, -2, -1), jnp.diagonal(lp, 0, -2, -1)
    logdet = jnp.sum(jnp.log(diag_q) - jnp.log(diag_p), -1)
    return 0.5 * (jnp.sum(m * m, (-2, -1)) - d + jnp.sum(z[..., 0] ** 2, -1)) + logdet


def _gkl_pytree(mp, lp, mq, lq):
    return gkl_jax.kl(gkl_jax.FullGaussian(mp, lp), gkl_jax.FullGaussian(mq, lq))


def _peers() -> dict:
    out = {}
    try:
        import distrax

        def dx(mp, lp, mq, lq):
            p = distrax.MultivariateNormalTri(mp, lp)
            return p.kl_divergence(distrax.MultivariateNormalTri(mq, lq))

        out["distrax MultivariateNormalTri"] = dx
    except Exception:  # any import failure: the peer is not available
        pass
    try:
        from tensorflow_probability.substrates import jax as tfp

        def tf(mp, lp, mq, lq):
            tfd = tfp.distributions
            return tfd.kl_divergence(
                tfd.MultivariateNormalTriL(mp, lp), tfd.MultivariateNormalTriL(mq, lq)
            )

        out["TFP (JAX) MultivariateNormalTriL"] = tf
    except Exception:  # the peer is not available
        pass
    return out


def _torch_kl():
    try:
        import torch
        from torch.distributions import MultivariateNormal, kl_divergence
    except Exception:  # the peer is not available
        return None

    def kl(mp, lp, mq, lq):
        t = [torch.from_numpy(np.asarray(a)) for a in (mp, lp, mq, lq)]
        p = MultivariateNormal(t[0], scale_tril=t[1])
        return kl_divergence(p, MultivariateNormal(t[2], scale_tril=t[3])).numpy()

    return kl


# ---------------------------------------------------------------------------------------------
# inputs and references
# ---------------------------------------------------------------------------------------------


def random_pairs(rng, batch, dim, delta=None):
    """Well-conditioned Cholesky factors; ``delta`` makes p a relative perturbation of q."""
    a = rng.standard_normal((batch, dim, dim)) / np.sqrt(dim)
    lq = np.tril(a, -1) * 0.5 + np.eye(dim) * np.exp(0.3 * rng.standard_normal((batch, 1, dim)))
    mq = rng.standard_normal((batch, dim))
    if delta is None:
        b = rng.standard_normal((batch, dim, dim)) / np.sqrt(dim)
        lp = np.tril(b, -1) * 0.5 + np.eye(dim) * np.exp(0.3 * rng.standard_normal((batch, 1, dim)))
        mp = rng.standard_normal((batch, dim))
    else:
        lp = lq * (1 + delta * rng.standard_normal(lq.shape))
        mp = mq + delta * rng.standard_normal(mq.shape)
    return tuple(np.asarray(x, np.float32) for x in (mp, lp, mq, lq))


def exact_kl(mp, lp, mq, lq):
    """float64 KL of the given (float32) inputs, in difference form: ~1e-15 relative."""
    mp, lp, mq, lq = (np.asarray(x, np.float64) for x in (mp, lp, mq, lq))
    out = np.empty(mp.shape[0])
    for i in range(mp.shape[0]):
        x = sl.solve_triangular(lq[i], np.tril(lp[i]) - np.tril(lq[i]), lower=True)
        z = sl.solve_triangular(lq[i], mp[i] - mq[i], lower=True)
        r = np.log1p((np.diag(lp[i]) - np.diag(lq[i])) / np.diag(lq[i]))
        out[i] = 0.5 * (np.sum(np.tril(x, -1) ** 2) + np.sum(np.expm1(2 * r) - 2 * r) + z @ z)
    return out


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def interleaved(fns: dict, args, repeats: int) -> dict:
    """Median ms per function, calls interleaved so that machine load hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _grad_fn(fn):
    return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=(0, 1, 2, 3)))


def _peer_grad_child(batch, dim, repeats, peer):
    """Subprocess entry: prints the value+grad median ms of peer number ``peer``."""
    fn = _grad_fn(list(_peers().values())[peer])
    args = random_pairs(np.random.default_rng(0), batch, dim)
    print(interleaved({"d": fn}, args, repeats)["d"])


def peer_grad_ms(batch, dim, repeats, timeout, peer=0):
    cmd = [sys.executable, __file__, "--peer-grad-child", str(batch), str(dim), str(repeats)]
    cmd.append(str(peer))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return float(res.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return None
    except (subprocess.CalledProcessError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def speed_section(batch, dim, repeats, grad_timeout) -> list[str]:
    args = random_pairs(np.random.default_rng(0), batch, dim)
    jargs = tuple(jnp.asarray(a) for a in args)
    fns = {
        "gkl_jax.kl_full": jax.jit(gkl_jax.kl_full),
        "gkl_jax.kl(FullGaussian, FullGaussian)": jax.jit(_gkl_pytree),
        "jnp formula + XLA triangular_solve": jax.jit(_handwritten),
    }
    for name, fn in _peers().items():
        fns[name] = jax.jit(fn)
    ms = interleaved(fns, jargs, repeats)
    torch_kl = _torch_kl()
    if torch_kl is not None:
        torch_kl(*args)
        t = []
        for _ in range(max(3, repeats // 4)):
            t0 = time.perf_counter()
            torch_kl(*args)
            t.append(time.perf_counter() - t0)
        ms["torch MultivariateNormal(scale_tril)"] = 1e3 * statistics.median(t)
    ref = ms["gkl_jax.kl_full"]
    lines = [
        f"### KL, full covariance: B = {batch}, D = {dim}, float32, jit",
        "",
        "| implementation | ms | time / gkl_jax.kl_full |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {t:.1f} | {t / ref:.2f}x |" for n, t in ms.items()]

    g_ours = interleaved({"g": _grad_fn(gkl_jax.kl_full)}, jargs, repeats)["g"]
    lines += ["", "Value + gradient with respect to all four inputs:", ""]
    lines += ["| implementation | B | ms | time / gkl_jax |", "|---|---|---|---|"]
    lines.append(f"| gkl_jax.kl_full | {batch} | {g_ours:.1f} | 1.00x |")
    peers = list(_peers())
    if peers:
        small = max(batch // 16, 1)
        g_small = interleaved(
            {"g": _grad_fn(gkl_jax.kl_full)},
            tuple(jnp.asarray(a) for a in random_pairs(np.random.default_rng(0), small, dim)),
            repeats,
        )["g"]
        for index, name in enumerate(peers):
            for b, ours in ((small, g_small), (batch, g_ours)):
                peer = peer_grad_ms(b, dim, max(3, repeats // 4), grad_timeout, index)
                if peer is None:
                    lines.append(f"| {name} | {b} | > {grad_timeout} s | - |")
                else:
                    lines.append(
                        f"| {name} | {b} | {peer:.1f} | {peer / ours:.2f}x "
                        f"(gkl_jax at B = {b}: {ours:.1f} ms) |"
                    )
    return lines


def eager_section(batch, dim, repeats) -> list[str]:
    """``kl_full`` called eagerly vs under the caller's ``jax.jit``, and the first-call time
    (trace + compile + run) of each."""
    args = tuple(jnp.asarray(a) for a in random_pairs(np.random.default_rng(3), batch, dim))
    fns = {"eager": gkl_jax.kl_full, "jit": jax.jit(gkl_jax.kl_full)}
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - t0
    ms = interleaved(fns, args, repeats)
    return [
        f"### kl_full eager vs jit: B = {batch}, D = {dim}, float32",
        "",
        "| call | ms | first call s (trace + compile + run) |",
        "|---|---|---|",
        *(f"| {n} | {ms[n]:.2f} | {first[n]:.2f} |" for n in fns),
        "",
        f"eager / jit: {ms['eager'] / ms['jit']:.2f}x",
    ]


def accuracy_section(dims=(16, 128), deltas=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5), batch=32):
    fns = {"gkl_jax.kl_full": jax.jit(gkl_jax.kl_full)}
    fns |= {n: jax.jit(f) for n, f in _peers().items()}
    header = "| D | delta | " + " | ".join(fns) + " |"
    lines = [
        "### Accuracy: max relative error, float32, vs float64 exact of the same inputs",
        "",
        header,
        "|" + "---|" * (len(fns) + 2),
    ]
    rng = np.random.default_rng(1)
    for dim in dims:
        for delta in deltas:
            args = random_pairs(rng, batch, dim, delta)
            ref = exact_kl(*args)
            errs = []
            for fn in fns.values():
                got = np.asarray(fn(*(jnp.asarray(a) for a in args)), np.float64)
                errs.append(np.max(np.abs(got - ref) / ref))
            lines.append(f"| {dim} | {delta:g} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")
    return lines


def low_rank_section(dim=4096, rank=16, repeats=20):
    rng = np.random.default_rng(2)

    def make():
        return (
            rng.standard_normal(dim),
            0.3 * rng.standard_normal((dim, rank)),
            0.3 * rng.standard_normal(dim),
        )

    (mp, wp, lp), (mq, wq, lq) = make(), make()
    f32 = [np.asarray(a, np.float32) for a in (mp, wp, lp, mq, wq, lq)]
    p = gkl_jax.LowRankGaussian(*f32[:3])
    q = gkl_jax.LowRankGaussian(*f32[3:])
    fn = jax.jit(gkl_jax.kl)
    ms = interleaved({"lr": fn}, (p, q), repeats)["lr"]
    got = float(fn(p, q))
    f = [np.asarray(a, np.float64) for a in f32]
    cp = f[1] @ f[1].T + np.diag(np.exp(f[2]))
    cq = f[4] @ f[4].T + np.diag(np.exp(f[5]))
    t0 = time.perf_counter()
    chol_q = np.linalg.cholesky(cq)
    z = sl.solve_triangular(chol_q, f[3] - f[0], lower=True)
    tr = np.sum(sl.solve_triangular(chol_q, np.linalg.cholesky(cp), lower=True) ** 2)
    logdet = 2 * np.sum(np.log(np.diag(chol_q))) - np.linalg.slogdet(cp)[1]
    ref = 0.5 * (tr - dim + z @ z + logdet)
    dense_s = time.perf_counter() - t0
    return [
        f"### Low rank: D = {dim}, k = {rank}, float32, jit",
        "",
        f"gkl_jax.kl(LowRankGaussian, LowRankGaussian): {ms:.2f} ms per pair "
        f"(O(D k^2), no D x D array); relative error vs dense float64: {abs(got - ref) / ref:.1e} "
        f"(the dense float64 reference took {dense_s:.1f} s).",
    ]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--grad-timeout", type=int, default=60)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    ap.add_argument("--peer-grad-child", nargs=4, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_grad_child:
        _peer_grad_child(*args.peer_grad_child)
        return ""
    lines = [
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; machine shared with other "
        "jobs, so absolute times are noisy: compare ratios within a table.",
        "",
    ]
    lines += [*speed_section(args.batch, args.dim, args.repeats, args.grad_timeout), ""]
    lines += [*eager_section(1024, 64, args.repeats), ""]
    lines += [*accuracy_section(), ""]
    lines += low_rank_section()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
