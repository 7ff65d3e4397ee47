"""Value checks cost nothing outside the checked mode, and are reported inside it.

Outside ``gkl_jax.checked`` / ``gkl_jax.checking()`` the jaxpr of every public function holds no
checkify ``check`` primitive (at any depth: jit, cond, scan, custom_jvp, ...). Inside it, the same
function reports bad values -- also when it was jitted and called outside the checked mode first
(the mode is part of the jit cache key), and the reverse.
"""

import functools
from collections.abc import Iterator

import chex
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian
from gkl_jax._src.checks import value_checks_enabled

# --------------------------------------------------------------------------------------------
# the jaxpr walker


def _sub_jaxprs(value) -> Iterator[jex.core.Jaxpr]:
    if isinstance(value, jex.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex.core.Jaxpr):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _sub_jaxprs(v)


def primitive_names(jaxpr) -> list[str]:
    """Names of every primitive in ``jaxpr`` and (recursively) in the sub-jaxprs of its eqns."""
    if isinstance(jaxpr, jex.core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in _sub_jaxprs(param):
                names.extend(primitive_names(sub))
    return names


def has_check(jaxpr) -> bool:
    return "check" in primitive_names(jaxpr)


def _check_positive(x):
    checkify.debug_check(jnp.all(x > 0), "x must be positive")
    return x


def _with_custom_jvp(f):
    g = jax.custom_jvp(f)
    g.defjvp(lambda primals, tangents: (g(*primals), tangents[0]))
    return g


@pytest.mark.parametrize(
    "wrap",
    [
        lambda f: f,
        jax.jit,
        lambda f: jax.jit(jax.jit(f)),
        lambda f: lambda x: jax.lax.cond(x[0] > 0, f, lambda y: y, x),
        lambda f: lambda x: jax.lax.scan(lambda c, _: (f(c), None), x, None, length=2)[0],
        lambda f: lambda x: jax.lax.while_loop(lambda c: c[0] > 10, f, x),
        lambda f: _with_custom_jvp(f),
        lambda f: jax.vmap(f),
    ],
    ids=["plain", "jit", "jit-jit", "cond", "scan", "while", "custom_jvp", "vmap"],
)
def test_walker_finds_nested_checks(wrap):
    x = jnp.ones((2,))
    assert has_check(jax.make_jaxpr(wrap(_check_positive))(x))
    assert not has_check(jax.make_jaxpr(wrap(lambda y: y + 1))(x))


def test_walker_finds_checks_in_custom_vjp():
    @jax.custom_vjp
    def f(x):
        return _check_positive(x)

    f.defvjp(lambda x: (f(x), None), lambda _, g: (g,))
    assert has_check(jax.make_jaxpr(f)(jnp.ones(2)))


# --------------------------------------------------------------------------------------------
# every public function that computes something: (function of arrays, good args, bad args,
# message fragment). Distributions are built inside the function from the arrays, so that the
# checked mode sees their construction.

D = 3
RNG = np.random.default_rng(0)
MEAN = jnp.asarray(RNG.normal(size=(2, D)), jnp.float32)
LOG_VAR = jnp.asarray(RNG.uniform(-1, 1, (2, D)), jnp.float32)
_T = np.tril(RNG.normal(size=(2, D, D)))
_T[..., np.arange(D), np.arange(D)] = RNG.uniform(0.5, 1.5, (2, D))
TRIL = jnp.asarray(_T, jnp.float32)
FACTOR = jnp.asarray(RNG.normal(size=(2, D, 2)), jnp.float32)
LOGITS = jnp.asarray(RNG.normal(size=(2, 4)), jnp.float32)
COMP_MEAN = jnp.asarray(RNG.normal(size=(2, 4, D)), jnp.float32)
X_P = jnp.asarray(RNG.normal(size=(40, D)), jnp.float32)
X_Q = jnp.asarray(1.0 + RNG.normal(size=(40, D)), jnp.float32)
KEY = jax.random.key(0)

NAN_MEAN = MEAN.at[0, 1].set(jnp.nan)
ZERO_TRIL = TRIL.at[1, 2, 2].set(0.0)  # a negative diagonal is valid (its column is flipped)
NAN_FACTOR = FACTOR.at[0, 0, 0].set(jnp.nan)
NAN_LOGITS = LOGITS.at[1, 3].set(jnp.nan)
COV = TRIL @ jnp.swapaxes(TRIL, -1, -2)
NOT_PD = COV.at[:, 0, 0].set(-1.0)


def make(kind, mean):
    if kind == "diag":
        return DiagGaussian(mean, LOG_VAR)
    if kind == "full":
        return FullGaussian(mean, TRIL)
    if kind == "low_rank":
        return LowRankGaussian(mean, FACTOR, LOG_VAR)
    raise ValueError(kind)


CLASS = {"diag": "DiagGaussian", "full": "FullGaussian", "low_rank": "LowRankGaussian"}
KINDS = list(CLASS)
PAIRS = [(a, b) for a in KINDS for b in KINDS]


def _pair_case(fn, kp, kq):
    return (
        lambda mp: fn(make(kp, mp), make(kq, MEAN[::-1])),
        (MEAN,),
        (NAN_MEAN,),
        f"{CLASS[kp]}: argument 'mean' must be finite: 1 of 6",
    )


def _mixture(logits):
    return GaussianMixture(logits, DiagGaussian(COMP_MEAN, jnp.zeros(D)))


CASES = {
    # array API
    "kl_diag": (
        gkl_jax.kl_diag,
        (MEAN, LOG_VAR, MEAN[::-1], LOG_VAR[::-1]),
        (NAN_MEAN, LOG_VAR, MEAN[::-1], LOG_VAR[::-1]),
        "kl_diag: argument 'mean_p' must be finite: 1 of 6",
    ),
    "kl_diag-std": (
        lambda *a: gkl_jax.kl_diag(*a, param="std"),
        (MEAN, jnp.exp(LOG_VAR), MEAN, jnp.ones((2, D))),
        (MEAN, -jnp.exp(LOG_VAR), MEAN, jnp.ones((2, D))),
        "kl_diag: argument 'log_var_p (a std)' must be positive: 6 of 6",
    ),
    "kl_diag_standard": (
        gkl_jax.kl_diag_standard,
        (MEAN, LOG_VAR),
        (MEAN, LOG_VAR.at[1, 1].set(jnp.inf)),
        "kl_diag_standard: argument 'log_var' must be finite: 1 of 6",
    ),
    "kl_full": (
        gkl_jax.kl_full,
        (MEAN, TRIL, MEAN[::-1], TRIL[::-1]),
        (MEAN, TRIL, MEAN[::-1], ZERO_TRIL),
        "kl_full: argument 'diagonal of scale_tril_q' must be non-zero",
    ),
    "phi": (gkl_jax.phi, (LOG_VAR,), None, None),
    "kl_from_samples-knn": (
        gkl_jax.kl_from_samples,
        (X_P, X_Q),
        (X_P.at[3, 0].set(jnp.nan), X_Q),
        "kl_from_samples: argument 'x_p' must be finite: 1 of 120",
    ),
    "kl_from_samples-gaussian": (
        lambda a, b: gkl_jax.kl_from_samples(a, b, method="gaussian"),
        (X_P, X_Q),
        (X_P, X_Q.at[3].set(jnp.inf)),
        "kl_from_samples: argument 'x_q' must be finite: 3 of 120",
    ),
    # constructors
    "DiagGaussian": (
        DiagGaussian,
        (MEAN, LOG_VAR),
        (NAN_MEAN, LOG_VAR),
        "DiagGaussian: argument 'mean' must be finite: 1 of 6",
    ),
    "DiagGaussian.from_std": (
        DiagGaussian.from_std,
        (MEAN, jnp.exp(LOG_VAR)),
        (MEAN, jnp.exp(LOG_VAR).at[0, 0].set(0.0)),
        "DiagGaussian.from_std: argument 'std' must be positive: 1 of 6",
    ),
    "DiagGaussian.from_var": (
        DiagGaussian.from_var,
        (MEAN, jnp.exp(LOG_VAR)),
        (MEAN, -jnp.exp(LOG_VAR)),
        "DiagGaussian.from_var: argument 'var' must be positive: 6 of 6",
    ),
    "FullGaussian": (
        FullGaussian,
        (MEAN, TRIL),
        (MEAN, ZERO_TRIL),
        "FullGaussian: argument 'diagonal of scale_tril' must be positive: 1 of 6",
    ),
    "FullGaussian.from_scale": (
        FullGaussian.from_scale,
        (MEAN, COV),
        (MEAN, COV.at[1, 0, 2].set(jnp.inf)),
        "FullGaussian.from_scale: argument 'scale' must be finite: 1 of 18",
    ),
    "FullGaussian.from_cov": (
        FullGaussian.from_cov,
        (MEAN, COV),
        (MEAN, NOT_PD),
        "FullGaussian.from_cov: argument 'cov' is not symmetric positive definite",
    ),
    "FullGaussian.from_precision": (
        FullGaussian.from_precision,
        (MEAN, COV),
        (MEAN, COV.at[0, 1, 1].set(jnp.nan)),
        "FullGaussian.from_precision: argument 'precision' must be finite: 1 of 18",
    ),
    "FullGaussian.from_precision-mean": (
        FullGaussian.from_precision,
        (MEAN, COV),
        (NAN_MEAN, COV),
        "FullGaussian.from_precision: argument 'mean' must be finite: 1 of 6",
    ),
    "LowRankGaussian": (
        LowRankGaussian,
        (MEAN, FACTOR, LOG_VAR),
        (MEAN, NAN_FACTOR, LOG_VAR),
        "LowRankGaussian: argument 'factor' must be finite: 1 of 12",
    ),
    "GaussianMixture": (
        _mixture,
        (LOGITS,),
        (NAN_LOGITS,),
        "GaussianMixture: argument 'logits' must be finite or -inf (a zero-weight component): 1 of 8",
    ),
    # mixtures
    "kl_mixture_variational": (
        lambda lg: gkl_jax.kl_mixture_variational(_mixture(lg), _mixture(LOGITS[::-1])),
        (LOGITS,),
        (NAN_LOGITS,),
        "GaussianMixture: argument 'logits' must be finite or -inf",
    ),
    "kl_mixture_upper_bound": (
        lambda lg: gkl_jax.kl_mixture_upper_bound(_mixture(lg), DiagGaussian(MEAN, LOG_VAR)),
        (LOGITS,),
        (NAN_LOGITS,),
        "GaussianMixture: argument 'logits' must be finite or -inf",
    ),
    # Monte Carlo
    "kl_mc-diag": (
        lambda m: gkl_jax.kl_mc(KEY, make("diag", m), make("full", MEAN), num_samples=8),
        (MEAN,),
        (NAN_MEAN,),
        "DiagGaussian: argument 'mean' must be finite",
    ),
    "kl_mc-k1-antithetic-cv": (
        lambda m: gkl_jax.kl_mc(
            KEY,
            make("diag", m),
            make("diag", MEAN[::-1]),
            num_samples=16,
            estimator="k1",
            antithetic=True,
            control_variates=True,
        ),
        (MEAN,),
        (NAN_MEAN,),
        "DiagGaussian: argument 'mean' must be finite",
    ),
    "kl_mc-mixture": (
        lambda lg: gkl_jax.kl_mc(KEY, _mixture(lg), make("low_rank", MEAN), num_samples=8),
        (LOGITS,),
        (NAN_LOGITS,),
        "GaussianMixture: argument 'logits' must be finite or -inf",
    ),
}
for _kp, _kq in PAIRS:
    CASES[f"kl-{_kp}-{_kq}"] = _pair_case(gkl_jax.kl, _kp, _kq)
for _name, _fn in [
    ("jeffreys", gkl_jax.jeffreys),
    ("renyi0.5", lambda p, q: gkl_jax.renyi(p, q, alpha=0.5)),
    ("renyi2", lambda p, q: gkl_jax.renyi(p, q, alpha=2.0)),
    ("bhattacharyya", gkl_jax.bhattacharyya),
    ("hellinger", gkl_jax.hellinger),
    ("wasserstein2", gkl_jax.wasserstein2),
    ("wasserstein2-squared", lambda p, q: gkl_jax.wasserstein2(p, q, squared=True)),
    ("cross_entropy", gkl_jax.cross_entropy),
    ("kl-axis-none", lambda p, q: gkl_jax.kl(p, q, axis=None)),
]:
    for _kp, _kq in PAIRS:
        CASES[f"{_name}-{_kp}-{_kq}"] = _pair_case(_fn, _kp, _kq)
# methods (on a distribution built inside, as a model would)
for _kind in KINDS:
    CASES[f"{CLASS[_kind]}.log_prob"] = (
        lambda m, x, _k=_kind: make(_k, m).log_prob(x),
        (MEAN, MEAN[::-1]),
        (NAN_MEAN, MEAN[::-1]),
        f"{CLASS[_kind]}: argument 'mean' must be finite",
    )
    CASES[f"{CLASS[_kind]}.sample"] = (
        lambda m, _k=_kind: make(_k, m).sample(KEY, (4,)),
        (MEAN,),
        (NAN_MEAN,),
        f"{CLASS[_kind]}: argument 'mean' must be finite",
    )
    CASES[f"{CLASS[_kind]}.entropy"] = (
        lambda m, _k=_kind: make(_k, m).entropy(),
        (MEAN,),
        (NAN_MEAN,),
        f"{CLASS[_kind]}: argument 'mean' must be finite",
    )
CASES["kl-axis-per-dimension"] = _pair_case(lambda p, q: gkl_jax.kl(p, q, axis=()), "diag", "diag")
CASES["cross_entropy-mixture"] = (
    lambda lg: gkl_jax.cross_entropy(_mixture(lg), make("full", MEAN)),
    (LOGITS,),
    (NAN_LOGITS,),
    "GaussianMixture: argument 'logits' must be finite or -inf",
)
CASES["GaussianMixture.log_prob"] = (
    lambda lg, x: _mixture(lg).log_prob(x),
    (LOGITS, MEAN[::-1]),
    (NAN_LOGITS, MEAN[::-1]),
    "GaussianMixture: argument 'logits' must be finite or -inf",
)
CASES["GaussianMixture.sample"] = (
    lambda lg: _mixture(lg).sample(KEY, (4,)),
    (LOGITS,),
    (NAN_LOGITS,),
    "GaussianMixture: argument 'logits' must be finite or -inf",
)

# A representative subset is run (not only traced) in the checked mode: one per public function.
RUN = [
    "kl_diag",
    "kl_diag-std",
    "kl_diag_standard",
    "kl_full",
    "kl_from_samples-knn",
    "kl_from_samples-gaussian",
    "DiagGaussian",
    "DiagGaussian.from_std",
    "DiagGaussian.from_var",
    "FullGaussian",
    "FullGaussian.from_cov",
    "FullGaussian.from_precision",
    "LowRankGaussian",
    "GaussianMixture",
    "kl_mixture_variational",
    "kl_mixture_upper_bound",
    "kl_mc-diag",
    "kl_mc-mixture",
    "kl-diag-diag",
    "kl-full-low_rank",
    "kl-low_rank-diag",
    "jeffreys-diag-full",
    "renyi0.5-low_rank-diag",
    "renyi2-full-full",
    "bhattacharyya-diag-diag",
    "hellinger-low_rank-low_rank",
    "wasserstein2-diag-low_rank",
    "FullGaussian.log_prob",
    "LowRankGaussian.sample",
    "DiagGaussian.entropy",
    "GaussianMixture.log_prob",
]


@pytest.mark.parametrize("name", list(CASES))
def test_no_check_primitive_outside_the_checked_mode(name):
    fn, good, _, _ = CASES[name]
    jaxpr = jax.make_jaxpr(fn)(*good)
    assert not has_check(jaxpr), f"{name} traces a check outside the checked mode"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] is not None])
def test_checks_are_traced_inside_the_checked_mode(name):
    fn, good, _, _ = CASES[name]
    with gkl_jax.checking():
        jaxpr = jax.make_jaxpr(fn)(*good)
    assert has_check(jaxpr), f"{name} traces no check inside the checked mode"


def test_phi_has_no_value_checks_at_all():
    with gkl_jax.checking():
        assert not has_check(jax.make_jaxpr(gkl_jax.phi)(LOG_VAR))


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("kl", (make("full", MEAN), make("low_rank", MEAN[::-1]))),
        ("kl", (make("diag", MEAN), make("diag", MEAN[::-1]))),
        ("jeffreys", (make("low_rank", MEAN), make("full", MEAN[::-1]))),
        ("bhattacharyya", (make("diag", MEAN), make("low_rank", MEAN[::-1]))),
        ("hellinger", (make("full", MEAN), make("diag", MEAN[::-1]))),
        ("wasserstein2", (make("full", MEAN), make("full", MEAN[::-1]))),
        ("kl_mixture_variational", (_mixture(LOGITS), _mixture(LOGITS[::-1]))),
        ("kl_mixture_upper_bound", (_mixture(LOGITS), make("diag", MEAN))),
        ("kl_mc", (KEY, make("diag", MEAN), make("low_rank", MEAN[::-1]))),
        ("kl_mc", (KEY, _mixture(LOGITS), make("full", MEAN[::-1]))),
    ],
)
def test_public_function_on_prebuilt_distributions_traces_no_check(name, args):
    fn = getattr(gkl_jax, name)
    if name == "kl_mc":
        fn = functools.partial(fn, num_samples=8)
    jaxpr = jax.make_jaxpr(fn)(*args)
    assert not has_check(jaxpr)
    with gkl_jax.checking():  # and the same call checks its prebuilt arguments in the mode
        assert has_check(jax.make_jaxpr(fn)(*args))


def test_kl_diag_traces_no_is_finite_and_no_extra_reduction():
    args = (MEAN, LOG_VAR, MEAN[::-1], LOG_VAR[::-1])
    names = primitive_names(jax.make_jaxpr(gkl_jax.kl_diag)(*args))
    assert "check" not in names
    assert "is_finite" not in names

    def hand_written(mp, lp, mq, lq):
        return 0.5 * jnp.sum((mp - mq) ** 2 / jnp.exp(lq) + jnp.exp(lp - lq) - 1 - (lp - lq), -1)

    reduce_ops = [n for n in names if n.startswith("reduce")]
    reference = [
        n for n in primitive_names(jax.make_jaxpr(hand_written)(*args)) if n.startswith("reduce")
    ]
    assert len(reduce_ops) <= len(reference)
    # the checked trace has them (so the comparison above is meaningful)
    with gkl_jax.checking():
        checked_names = primitive_names(jax.make_jaxpr(gkl_jax.kl_diag)(*args))
    assert "is_finite" in checked_names
    assert len([n for n in checked_names if n.startswith("reduce")]) > len(reduce_ops)
    # and the value is the textbook one
    np.testing.assert_allclose(
        gkl_jax.kl_diag(*args),
        hand_written(*(np.asarray(a, np.float64) for a in args)),
        rtol=1e-5,
    )


# --------------------------------------------------------------------------------------------
# the checked mode reports


def _value_close(got, want):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        if jnp.issubdtype(jnp.asarray(g).dtype, jnp.floating):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", RUN)
def test_checked_mode_reports_bad_values_and_passes_good_ones(name):
    fn, good, bad, message = CASES[name]
    run = jax.jit(gkl_jax.checked(fn))  # one compilation for both calls (eager is slower)
    err, _ = run(*bad)
    assert err.get() is not None and message in err.get()
    err, value = run(*good)
    assert err.get() is None
    _value_close(value, jax.jit(fn)(*good))


@pytest.mark.parametrize("name", ["kl_diag", "kl_full", "kl-full-full", "renyi2-full-diag"])
def test_jit_cache_does_not_serve_the_unchecked_trace(name):
    fn, good, bad, message = CASES[name]
    modes = []

    def traced(*args):
        modes.append(value_checks_enabled())
        return fn(*args)

    f = jax.jit(traced)
    want = f(*good)
    assert modes == [False]
    err, value = gkl_jax.checked(f)(*bad)  # same shapes: must be traced again, with checks
    assert err.get() is not None and message in err.get()
    assert modes == [False, True]
    err, value = gkl_jax.checked(f)(*good)
    assert err.get() is None
    _value_close(value, want)
    # each mode keeps its own cache entry
    f(*good)
    gkl_jax.checked(f)(*good)
    assert modes == [False, True]


@pytest.mark.parametrize(
    "name", ["kl_diag", "kl_full", "kl-full-low_rank", "wasserstein2-full-full"]
)
def test_checked_first_then_unchecked_has_no_check(name):
    fn, good, bad, message = CASES[name]
    modes = []

    def traced(*args):
        modes.append(value_checks_enabled())
        return fn(*args)

    f = jax.jit(traced)
    err, _ = gkl_jax.checked(f)(*bad)
    assert message in err.get()
    assert modes == [True]
    # unchecked, same shapes: traced again without checks, and bad values pass silently
    out = f(*bad)
    assert modes == [True, False]
    assert not np.all(np.isfinite(np.asarray(jax.tree_util.tree_leaves(out)[0])))
    assert not has_check(jax.make_jaxpr(f)(*good))
    assert not has_check(f.trace(*good).jaxpr)


def test_plain_jit_of_kl_diag_then_checked():
    # the brief's exact pattern: jit the public function itself
    _, good, bad, message = CASES["kl_diag"]
    f = jax.jit(gkl_jax.kl_diag)
    value = f(*good)
    err, _ = gkl_jax.checked(f)(*bad)
    assert err.get() is not None and message in err.get()
    err, checked_value = gkl_jax.checked(f)(*good)
    assert err.get() is None
    np.testing.assert_allclose(checked_value, value, rtol=1e-6)
    g = jax.jit(gkl_jax.kl_diag)
    err, _ = gkl_jax.checked(g)(*bad)
    assert message in err.get()
    assert np.isnan(np.asarray(g(*bad))[0])  # unchecked afterwards: no error, NaN passes
    assert not has_check(g.trace(*good).jaxpr)


@pytest.mark.parametrize("pair", [("full", "full"), ("diag", "low_rank")])
def test_internally_jitted_kl_reports_after_an_unchecked_call(pair):
    # kl for structured pairs runs a module-level jax.jit (compiled once per shape); calling it
    # unchecked first must not stop the checked call from reporting.
    fn, good, bad, message = CASES[f"kl-{pair[0]}-{pair[1]}"]
    fn(*good)
    jax.jit(fn)(*good)
    err, _ = gkl_jax.checked(fn)(*bad)
    assert message in err.get()
    err, _ = gkl_jax.checked(jax.jit(fn))(*bad)
    assert message in err.get()
    # and afterwards the unchecked trace is still check-free
    assert not has_check(jax.make_jaxpr(fn)(*good))


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_checked_kl_reports_a_prebuilt_distribution_with_a_nan_mean(kind):
    bad = make(kind, NAN_MEAN)  # built outside the checked mode: not checked here
    ok = make(kind, MEAN)
    gkl_jax.kl(ok, ok)  # the unchecked version first, same shapes
    err, value = gkl_jax.checked(gkl_jax.kl)(bad, ok)
    assert np.isnan(np.asarray(value)[0])
    assert "kl: argument 'p.mean' must be finite: 1 of 6" in err.get()


@pytest.mark.parametrize("name", ["kl_diag", "kl_full", "kl-full-diag", "FullGaussian.from_cov"])
def test_chexify_raises_inside_checking(name):
    fn, good, bad, message = CASES[name]
    with pytest.raises(Exception, match=message.split(":")[0]), gkl_jax.checking():
        chex.chexify(fn, async_check=False)(*bad)
    with gkl_jax.checking():
        value = chex.chexify(fn, async_check=False)(*good)
    _value_close(value, fn(*good))


def test_chexify_outside_checking_sees_no_check():
    # zero cost: outside the checked mode nothing is traced, so chexify has nothing to raise
    fn, _, bad, _ = CASES["kl_diag"]
    out = chex.chexify(fn, async_check=False)(*bad)
    assert np.isnan(np.asarray(out)[0]) and np.isfinite(np.asarray(out)[1])


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("kl", (make("diag", MEAN), make("diag", MEAN[::-1]))),
        ("kl", (DiagGaussian.from_std(MEAN, jnp.exp(LOG_VAR)), DiagGaussian(MEAN, LOG_VAR))),
        ("kl", (make("full", MEAN), make("low_rank", MEAN[::-1]))),
        ("kl_diag", (MEAN, LOG_VAR, MEAN[::-1], LOG_VAR[::-1])),
        ("kl_diag_standard", (MEAN, LOG_VAR)),
    ],
)
def test_an_eager_call_runs_one_compiled_function(name, args):
    # an eager call must not dispatch casts, checks or kernel pieces one by one: everything
    # between the Python argument handling and the result is a single jit call
    jaxpr = jax.make_jaxpr(getattr(gkl_jax, name))(*args)
    assert [e.primitive.name for e in jaxpr.eqns] == ["jit"]
