"""Every gkl_jax benchmark in one command, side by side with the hand-written formulas and peers.

Run:  python -m benchmarks [--quick] [--only NAME ...] [--out-dir benchmarks/results]
      (or python benchmarks/run.py ...)

Each benchmark is a *section*: a name and a function ``run(quick: bool) -> str`` returning
markdown. The built-in sections are registered below; a module ``benchmarks/<name>.py`` that
defines ``run(quick)`` plugs in under its own name (``PLUGINS`` lists the ones expected) and
replaces a built-in of the same name; a plug-in that is not there is skipped with a note. A
plug-in that is a stand-alone script (``main()`` with ``--out FILE``: coverage, knn, mc_speed,
memory, accuracy_structured, sharding) runs in its own process and writes its own
``<out-dir>/<name>.md``. Every other section writes ``<out-dir>/<name>.md``;
``<out-dir>/summary.md`` holds them all, under one description of the machine (CPU, cores, load,
versions).

``--quick`` runs every section on tiny sizes with few rounds (under a minute): a smoke test that
the benchmarks still run (``tests/test_benchmarks.py``), not a measurement. The stand-alone
scripts measure over many seeds or in several processes (minutes each) and run only without
``--quick``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import pathlib
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

if __package__ in (None, ""):  # python benchmarks/run.py: import this checkout's gkl_jax
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax
from benchmarks import _timing
from benchmarks import diag as diag_bench

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the older scripts import their siblings by plain name
    sys.path.append(str(HERE))

Section = Callable[[bool], str]
SECTIONS: dict[str, Section] = {}
PLUGINS = ("coverage", "knn", "mc_speed", "memory", "accuracy_structured", "sharding")


def section(name: str) -> Callable[[Section], Section]:
    """Registers a built-in section under ``name`` (order of registration = order of the run)."""

    def register(fn: Section) -> Section:
        SECTIONS[name] = fn
        return fn

    return register


@section("diag_small")
def _diag_small(quick: bool) -> str:
    return diag_bench.speed(128, 8, rounds=3 if quick else 15, calls=20 if quick else 300)


@section("diag_large")
def _diag_large(quick: bool) -> str:
    if quick:  # the peers ran in diag_small already
        return diag_bench.speed(256, 64, rounds=2, calls=2, peers=False)
    return diag_bench.speed(4096, 512, rounds=21, calls=5)


@section("diag_structure")
def _diag_structure(quick: bool) -> str:
    return diag_bench.structure(*((64, 8) if quick else (4096, 512)))


@section("eager")
def _eager(quick: bool) -> str:
    rows, dim = (128, 8) if quick else (1024, 64)
    return diag_bench.eager(rows, dim, rounds=3 if quick else 9, calls=5 if quick else 100)


@section("vae_step")
def _vae_step(quick: bool) -> str:
    try:
        import optax
        from flax import nnx

        from gkl_jax.nnx import VAE
    except ImportError as exc:
        return f"(skipped: {exc})"
    import vae_step  # benchmarks/vae_step.py: the step and the hand-written term

    batch, latent = 128, 8
    x = jnp.asarray((np.random.default_rng(0).random((batch, 64)) < 0.3).astype(np.float32))
    cases = {}
    for name, term in (
        ("hand-written KL", vae_step.hand_kl),
        ("gkl_jax.kl_diag_standard", gkl_jax.kl_diag_standard),
    ):
        model = VAE(64, latent, hidden=(256,), rngs=nnx.Rngs(params=0))
        opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        cases[name] = (vae_step.make_step(term), (model, opt, x, jax.random.key(0)))
    rounds, calls = (3, 5) if quick else (15, 200)
    t = _timing.interleaved(cases, rounds=rounds, calls=calls)
    base = t["hand-written KL"].median
    lines = [
        f"### Flax NNX VAE train step (64 -> 256 -> latent {latent}, batch {batch}, Adam, jit)",
        "",
        f"us per step: median [min-max] of {rounds} interleaved rounds of {calls} steps.",
        "",
        "| KL term in the loss | us / step | ratio |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {v.fmt(1e-6, 1)} | {v.median / base:.3f} |" for n, v in t.items()]
    return "\n".join(lines)


@section("accuracy_diag")
def _accuracy_diag(quick: bool) -> str:
    import accuracy_diag

    argv = ["--rows", "8", "--dim", "8"] if quick else []
    return "### Diagonal KL: accuracy\n\n" + accuracy_diag.main(argv)


@section("full")
def _full(quick: bool) -> str:
    import bench_full

    if quick:
        # tiny sizes; the peers still in child processes (in this process even tiny batched LAPACK
        # calls of two peers' gradients hung once in CI)
        speed = bench_full.speed_section(8, 16, 3, timeout=60)
        speed += ["", *bench_full.eager_section(16, 8, 3)]
        acc = bench_full.accuracy_section()
        low = bench_full.low_rank_section(dim=256, rank=4, repeats=3)
    else:
        speed = bench_full.speed_section(256, 128, 15)
        speed += ["", *bench_full.eager_section(1024, 64, 15)]
        acc = bench_full.accuracy_section()
        low = bench_full.low_rank_section()
    return "\n".join([*speed, "", *acc, "", *low])


@section("knn_speed")
def _knn_speed(quick: bool) -> str:
    import bench_knn

    n, d = (500, 4) if quick else (20_000, 32)
    x_p, x_q, exact = bench_knn.samples(n, n, d)
    est, best, compile_s = bench_knn.time_gkl(x_p, x_q, 1, repeats=2 if quick else 5)
    return "\n".join(
        [
            f"### kNN KL from samples (gkl_jax.kl_from_samples, k = 1), N = M = {n}, D = {d}",
            "",
            f"value {float(est.value):.4f} +- {float(est.stderr):.4f} (exact {exact:.4f}); "
            f"best of the timed calls {best:.3f} s after a first call of {compile_s:.1f} s. "
            "universal-divergence side by side: "
            "`python benchmarks/bench_knn.py --out benchmarks/results/knn.md`.",
        ]
    )


def sections() -> dict[str, Section]:
    """Built-ins, with every plug-in module that exists replacing or adding its name.

    Plug-ins are read, not imported, to find out what they define: a stand-alone script may set
    process-wide options at import (``sharding.py`` asks XLA for 8 CPU devices, which would
    change every other section's timings); it runs in its own process."""
    out = dict(SECTIONS)
    for name in PLUGINS:
        path = HERE / f"{name}.py"
        if not path.exists():
            if name not in out:
                out[name] = _missing(name)
            continue
        defined = {
            node.name
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        if "run" in defined:
            out[name] = _plugin(name)
        elif "main" in defined:
            out[name] = _script(name)
    return out


def _plugin(name: str) -> Section:
    """A plug-in module's ``run(quick)``, imported when its section runs."""
    return lambda quick: importlib.import_module(f"benchmarks.{name}").run(quick)


def _script(name: str) -> Section:
    """A stand-alone benchmark script as a section: ``python benchmarks/<name>.py --out FILE`` in
    its own process (the script owns the file: it may keep parts of it, as knn.py does)."""

    def run(quick: bool, out_dir: pathlib.Path = HERE / "results") -> str:
        if quick:
            return f"(stand-alone script, not run with --quick: `python benchmarks/{name}.py`)"
        target = out_dir / f"{name}.md"
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--out", str(target)]
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))  # this checkout's gkl_jax
        subprocess.run(cmd, check=True, cwd=HERE.parent, env=env)
        return target.read_text()

    run.writes_own_file = True
    return run


def _missing(name: str) -> Section:
    return lambda quick: f"(skipped: benchmarks/{name}.py is not in this checkout)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (smoke test)")
    ap.add_argument("--only", nargs="*", default=None, help="section names to run")
    ap.add_argument("--out-dir", type=pathlib.Path, default=HERE / "results")
    args = ap.parse_args(argv)

    todo = sections()
    if args.only:
        unknown = set(args.only) - set(todo)
        if unknown:
            ap.error(f"unknown sections {sorted(unknown)}; known: {sorted(todo)}")
        todo = {k: v for k, v in todo.items() if k in args.only}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    machine = _timing.machine()
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    header = f"Machine: {machine}. Command: `{command}`."
    parts, failed = [f"# gkl_jax benchmarks\n\n{header}\n"], []
    t_all = time.perf_counter()
    for name, fn in todo.items():
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        own_file = getattr(fn, "writes_own_file", False)
        try:
            text = fn(args.quick, args.out_dir) if own_file else fn(args.quick)
        except Exception:  # one broken section must not hide the others
            failed.append(name)
            text = "FAILED:\n\n```\n" + traceback.format_exc() + "```"
        text = text.rstrip() + f"\n\n({name}: {time.perf_counter() - t0:.1f} s)\n"
        print(text, flush=True)
        if not own_file:  # a script writes its own file (never a --quick note over its results)
            (args.out_dir / f"{name}.md").write_text(f"{header}\n\n{text}")
        parts.append(f"## {name}\n\n{text}")
    parts.append(f"Total: {time.perf_counter() - t_all:.0f} s.\n")
    (args.out_dir / "summary.md").write_text("\n".join(parts))
    if failed:
        print(f"failed sections: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
