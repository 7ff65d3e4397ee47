"""Full-covariance and low-rank KL: speed and accuracy against peers, side by side in one run.

Speed (jit, median of interleaved calls after compilation, float32):
* KL(p || q) for a batch of B = 256 full-covariance pairs with D = 128, from Cholesky factors:
  gkl_jax.kl_full, gkl_jax.kl on FullGaussian, distrax MultivariateNormalTri, TFP (JAX)
  MultivariateNormalTriL, torch MultivariateNormal(scale_tril) where installed, and the plain
  jnp formula with one XLA triangular solve (the algorithm distrax and TFP use);
* value + gradient with respect to all four inputs (gkl_jax, distrax and TFP);
* kl_full called eagerly vs jitted, B = 1024, D = 64, with the first-call (compile) time;
* low rank, D = 4096, k = 16 (never densified), with its error against the dense float64 KL.

Accuracy: max relative error of float32 results against the float64 KL of the same float32
inputs (SciPy triangular solves in difference form), for pairs p = q * (1 + delta * noise),
D = 16 and 128.

The JAX peers run in child processes, each timed interleaved with gkl_jax.kl_full in the same
child, with a time limit and retries: they compute two batched triangular solves that XLA may
run at once, and jaxlib 0.10's batched CPU LAPACK kernels then can deadlock a 2-thread pool
(README, "LAPACK"). A child that hangs is killed and retried; the table says how many tries hung.
gkl_jax's full-covariance path calls no LAPACK and runs in this process.

Run:  python benchmarks/bench_full.py [--batch 256] [--dim 128] [--repeats 20]
          [--out benchmarks/results/full.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import _timing
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sl

import gkl_jax

# ---------------------------------------------------------------------------------------------
# implementations
# ---------------------------------------------------------------------------------------------


def _handwritten(mp, lp, mq, lq):
    """The textbook Cholesky formula with XLA's triangular solve (what distrax/TFP compute), as
    one solve with both right-hand sides (L_p and the mean difference)."""
    rhs = jnp.concatenate([lp, (mq - mp)[..., None]], axis=-1)
    x = jax.lax.linalg.triangular_solve(lq, rhs, left_side=True, lower=True)
    m, z = x[..., :-1], x[..., -1]
    d = mp.shape[-1]
    diag_q, diag_p = jnp.diagonal(lq, 0, -2, -1), jnp.diagonal(lp, 0, -2, -1)
    logdet = jnp.sum(jnp.log(diag_q) - jnp.log(diag_p), -1)
    return 0.5 * (jnp.sum(m * m, (-2, -1)) - d + jnp.sum(z * z, -1)) + logdet


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


def _torch_kl(grad=False):
    """torch's KL of NumPy inputs (``grad``: value and the gradients of its sum with respect to
    all four inputs), or None where torch is not installed."""
    try:
        import torch
        from torch.distributions import MultivariateNormal, kl_divergence
    except Exception:  # the peer is not available
        return None

    def kl(mp, lp, mq, lq):
        t = [torch.tensor(np.asarray(a), requires_grad=grad) for a in (mp, lp, mq, lq)]
        p = MultivariateNormal(t[0], scale_tril=t[1])
        out = kl_divergence(p, MultivariateNormal(t[2], scale_tril=t[3]))
        if not grad:
            return out.detach().numpy()
        out.sum().backward()
        return out.detach().numpy(), [a.grad.numpy() for a in t]

    return kl


def _time_torch(fn, args, repeats):
    fn(*args)
    t = []
    for _ in range(max(3, repeats // 4)):
        t0 = time.perf_counter()
        fn(*args)
        t.append(time.perf_counter() - t0)
    return _spread(t)


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
    """``[median, min, max]`` ms per function over ``repeats`` rounds, calls interleaved so that
    machine load hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: _spread(t) for name, t in times.items()}


def _spread(seconds: list[float]) -> list[float]:
    return [1e3 * statistics.median(seconds), 1e3 * min(seconds), 1e3 * max(seconds)]


def _ms(t: list[float]) -> str:
    """``median [min-max]`` of a :func:`interleaved` entry."""
    return f"{t[0]:.1f} [{t[1]:.1f}-{t[2]:.1f}]"


def _grad_fn(fn):
    return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=(0, 1, 2, 3)))


def _child(task: str, peer: int, batch: int, dim: int, repeats: int) -> dict:
    """Child-process entry (``--child``): one peer, timed or checked, as JSON on stdout.

    * ``speed``: ``[median, min, max]`` ms of the jitted peer and of gkl_jax.kl_full, interleaved;
    * ``grad``: the same for value + gradient with respect to all four inputs;
    * ``accuracy``: the peer's max relative errors on :func:`accuracy_cases`."""
    fn = list(_peers().values())[peer]
    if task == "accuracy":
        f = jax.jit(fn)
        errs = []
        for args, ref in accuracy_cases(*_ACCURACY):
            got = np.asarray(f(*(jnp.asarray(a) for a in args)), np.float64)
            errs.append(float(np.max(np.abs(got - ref) / ref)))
        return {"errors": errs}
    args = tuple(jnp.asarray(a) for a in random_pairs(np.random.default_rng(0), batch, dim))
    wrap = _grad_fn if task == "grad" else jax.jit
    return interleaved({"peer": wrap(fn), "ours": wrap(gkl_jax.kl_full)}, args, repeats)


TRIES = 5  # tries of a child process that hangs


def in_child(task, peer, batch=0, dim=0, repeats=0, timeout=120, tries=TRIES):
    """Runs :func:`_child` in a fresh process, given up after ``timeout`` s or when it stops
    using the CPU (the LAPACK deadlock), and then retried.

    Returns ``(result or None, number of tries that hung)``; ``None`` when every try hung or
    failed."""
    cmd = [sys.executable, __file__, "--child", task, str(peer), str(batch), str(dim)]
    cmd.append(str(repeats))
    hung = 0
    for _ in range(tries):
        try:
            out = _timing.run_watched(cmd, timeout)
        except subprocess.CalledProcessError:
            return None, hung
        if out is None:
            hung += 1
            continue
        try:
            return json.loads(out.strip().splitlines()[-1]), hung
        except (ValueError, IndexError):
            return None, hung
    return None, hung


def _hung_note(hung, ok):
    """What happened to a child's tries: ``hung`` of them deadlocked; ``ok``: the last one ran."""
    if ok:
        tries = "1 try" if hung == 1 else f"{hung} tries"
        return f" ({tries} hung: LAPACK deadlock, then ran)" if hung else ""
    if hung == TRIES:
        return f" (all {hung} tries hung: LAPACK deadlock)"
    return f" ({hung} tries hung, then failed or ran past the time limit)"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _peer_runs(task, batch, dim, repeats, timeout):
    """``{peer name: (result dict or None, tries that hung)}`` for every installed JAX peer, each
    in child processes (even tiny batched LAPACK calls of a peer's gradient have hung in one
    process)."""
    return {
        name: in_child(task, index, batch, dim, repeats, timeout)
        for index, name in enumerate(_peers())
    }


def speed_section(batch, dim, repeats, timeout=120) -> list[str]:
    args = random_pairs(np.random.default_rng(0), batch, dim)
    jargs = tuple(jnp.asarray(a) for a in args)
    fns = {
        "gkl_jax.kl_full": jax.jit(gkl_jax.kl_full),
        "gkl_jax.kl(FullGaussian, FullGaussian)": jax.jit(_gkl_pytree),
        "jnp formula + one XLA triangular_solve": jax.jit(_handwritten),
    }
    ms = interleaved(fns, jargs, repeats)
    ref = ms["gkl_jax.kl_full"][0]
    lines = [
        f"### KL, full covariance: B = {batch}, D = {dim}, float32, jit",
        "",
        "Peers run in their own process, interleaved with gkl_jax.kl_full there; their ratio is to",
        "that process's kl_full.",
        "",
        "ms: median [min-max] of the interleaved rounds.",
        "",
        "| implementation | ms | time / gkl_jax.kl_full |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {_ms(t)} | {t[0] / ref:.2f}x |" for n, t in ms.items()]
    for name, (res, hung) in _peer_runs("speed", batch, dim, repeats, timeout).items():
        if res is None:
            lines.append(f"| {name} | no result{_hung_note(hung, False)} | - |")
        else:
            lines.append(
                f"| {name} | {_ms(res['peer'])} | {res['peer'][0] / res['ours'][0]:.2f}x "
                f"(kl_full there: {res['ours'][0]:.1f} ms){_hung_note(hung, True)} |"
            )
    torch_kl = _torch_kl()
    if torch_kl is not None:
        torch_ms = _time_torch(torch_kl, args, repeats)
        name = "torch MultivariateNormal(scale_tril)"
        lines.append(f"| {name} | {_ms(torch_ms)} | {torch_ms[0] / ref:.2f}x |")

    g_ours = interleaved({"g": _grad_fn(gkl_jax.kl_full)}, jargs, repeats)["g"]
    lines += ["", "Value + gradient with respect to all four inputs:", ""]
    lines += ["| implementation | B | ms | time / gkl_jax |", "|---|---|---|---|"]
    lines.append(f"| gkl_jax.kl_full | {batch} | {_ms(g_ours)} | 1.00x |")
    torch_grad = _torch_kl(grad=True)
    if torch_grad is not None:
        torch_ms = _time_torch(torch_grad, args, repeats)
        name = "torch MultivariateNormal(scale_tril), autograd"
        ratio = torch_ms[0] / g_ours[0]
        lines.append(f"| {name} | {batch} | {_ms(torch_ms)} | {ratio:.2f}x |")
    small = max(batch // 16, 1)
    for b in (small, batch):
        runs = _peer_runs("grad", b, dim, max(3, repeats // 4), timeout)
        for name, (res, hung) in runs.items():
            if res is None:
                lines.append(f"| {name} | {b} | no result{_hung_note(hung, False)} | - |")
            else:
                lines.append(
                    f"| {name} | {b} | {_ms(res['peer'])} | {res['peer'][0] / res['ours'][0]:.2f}x "
                    f"(gkl_jax there: {res['ours'][0]:.1f} ms){_hung_note(hung, True)} |"
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
        "| call | ms, median [min-max] | first call s (trace + compile + run) |",
        "|---|---|---|",
        *(f"| {n} | {_ms(ms[n])} | {first[n]:.2f} |" for n in fns),
        "",
        f"eager / jit: {ms['eager'][0] / ms['jit'][0]:.2f}x",
    ]


_ACCURACY = ((16, 128), (1e-1, 1e-2, 1e-3, 1e-4, 1e-5), 32)


def accuracy_cases(dims, deltas, batch):
    """``(inputs, float64 KL)`` per (D, delta), each from its own seed (the same in every
    process)."""
    for dim in dims:
        for i, delta in enumerate(deltas):
            args = random_pairs(np.random.default_rng([1, dim, i]), batch, dim, delta)
            yield args, exact_kl(*args)


def accuracy_section():
    """Max relative errors on :data:`_ACCURACY`'s cases; the peers in child processes."""
    ours = jax.jit(gkl_jax.kl_full)
    errs = {"gkl_jax.kl_full": []}
    for args, ref in accuracy_cases(*_ACCURACY):
        got = np.asarray(ours(*(jnp.asarray(a) for a in args)), np.float64)
        errs["gkl_jax.kl_full"].append(float(np.max(np.abs(got - ref) / ref)))
    notes = []
    for name, (res, hung) in _peer_runs("accuracy", 0, 0, 0, 300).items():
        if res is None:
            notes.append(f"{name}: no result{_hung_note(hung, False)}.")
            continue
        errs[name] = res["errors"]
        if hung:
            notes.append(f"{name}:{_hung_note(hung, True)}.")
    lines = [
        "### Accuracy: max relative error, float32, vs float64 exact of the same inputs",
        "",
        "| D | delta | " + " | ".join(errs) + " |",
        "|" + "---|" * (len(errs) + 2),
    ]
    cases = [(dim, delta) for dim in _ACCURACY[0] for delta in _ACCURACY[1]]
    for row, (dim, delta) in enumerate(cases):
        cells = " | ".join(f"{e[row]:.1e}" for e in errs.values())
        lines.append(f"| {dim} | {delta:g} | {cells} |")
    return lines + (["", *notes] if notes else [])


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
    ms = interleaved({"lr": fn}, (p, q), repeats)["lr"][0]
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
    ap.add_argument("--timeout", type=int, default=120, help="s per peer child process")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        task, *numbers = args.child
        print(json.dumps(_child(task, *map(int, numbers))))
        return ""
    lines = [
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; machine shared with other "
        "jobs, so absolute times are noisy: compare ratios within a table.",
        "",
    ]
    lines += [*speed_section(args.batch, args.dim, args.repeats, args.timeout), ""]
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
