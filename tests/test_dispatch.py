"""The type-dispatch registry (``Operation``): closest pair by MRO, no silent override, and the
registrations of the real operations (kl, structure, renyi, W2, Monte Carlo, mixtures)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, Gaussian, GaussianMixture, LowRankGaussian
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.divergences import renyi_parts
from gkl_jax._src.kl.mixture import as_mixture
from gkl_jax._src.kl.registry import kl_op
from gkl_jax._src.kl.structured import structure
from gkl_jax._src.monte_carlo import draw_with_noise, log_ratio_at_noise
from gkl_jax._src.wasserstein import wasserstein2_squared


class A:
    pass


class B(A):
    pass


class C(B):
    pass


class X:
    pass


def named(name):
    """A distinct implementation that reports its name."""

    def fn(*args):
        return name

    fn.__qualname__ = name
    return fn


def make_op(*registrations, arity=2, **kwargs):
    op = Operation("op", arity=arity, **kwargs)
    for types in registrations:
        op.register(*types)(named("".join(t.__name__ for t in types)))
    return op


# --------------------------------------------------------------------------------------------
# registration rules


def test_duplicate_registration_raises_naming_the_types():
    op = make_op((A, B))
    with pytest.raises(ValueError, match=r"op: \(A, B\) is already registered") as info:
        op.register(A, B)(named("again"))
    assert "override=True" in str(info.value)
    assert "AB" in str(info.value)  # names the implementation already there
    assert op.lookup(A, B)() == "AB"  # unchanged


def test_override_replaces():
    op = make_op((A, B))
    assert op(A(), B()) == "AB"
    op.register(A, B, override=True)(named("new"))
    assert op(A(), B()) == "new"
    assert op(C(), C()) == "new"  # the lookup cache was cleared


def test_override_of_a_missing_pair_just_registers():
    op = make_op()
    op.register(A, A, override=True)(named("AA"))
    assert op(A(), A()) == "AA"


@pytest.mark.invalid_input
def test_register_validates_its_arguments():
    op = make_op()
    with pytest.raises(TypeError, match="register takes 2 class"):
        op.register(A)
    with pytest.raises(TypeError, match="register takes 2 class"):
        op.register(A, "B")


def test_unregister_returns_the_implementation_and_clears_the_cache():
    op = make_op((A, A), (B, B))
    assert op(C(), C()) == "BB"
    fn = op.unregister(B, B)
    assert fn() == "BB"
    assert op(C(), C()) == "AA"
    with pytest.raises(KeyError):
        op.unregister(B, B)


def test_registration_clears_the_cache():
    op = make_op((A, A))
    assert op(C(), C()) == "AA"
    op.register(C, C)(named("CC"))
    assert op(C(), C()) == "CC"


# --------------------------------------------------------------------------------------------
# lookup: the closest registered tuple


@pytest.mark.parametrize(
    ("registrations", "args", "want"),
    [
        # exact pair beats everything
        ([(A, A), (C, C)], (C, C), "CC"),
        # distance: (A,A)=4, (B,A)=3, (A,C)=2. Searching p's whole MRO first would pick (B, A).
        ([(A, A), (B, A), (A, C)], (C, C), "AC"),
        # (B,A)=1+2=3 vs (A,C)=2+0=2: the nearer q class wins over the nearer p class
        ([(B, A), (A, C)], (C, C), "AC"),
        # (C,A)=0+2=2 vs (B,B)=1+1=2 vs (A,C)=2+0=2: tie, the first argument's nearer class wins
        ([(A, C), (B, B), (C, A)], (C, C), "CA"),
        ([(A, C), (B, B)], (C, C), "BB"),
        # object is the farthest class of every MRO
        ([(object, object), (A, object)], (C, C), "Aobject"),
        ([(object, object)], (X, C), "objectobject"),
        # unrelated classes never match
        ([(X, X)], (C, C), None),
        ([(A, X)], (C, C), None),
    ],
)
def test_closest_pair_wins(registrations, args, want):
    op = make_op(*registrations)
    got = op.lookup(*args)
    assert (got and got()) == want
    # the cached answer is the same
    assert op.lookup(*args) is got


def test_tie_goes_to_the_first_arguments_nearer_class_regardless_of_registration_order():
    for order in ([(B, A), (A, B)], [(A, B), (B, A)]):
        op = make_op(*order)
        assert op.lookup(B, B)() == "BA"


def test_closest_rule_with_multiple_inheritance():
    class M(X, A):  # MRO: M, X, A, object
        pass

    op = make_op((A, A), (X, A))
    assert op.lookup(M, A)() == "XA"  # X is nearer than A in M's MRO
    op = make_op((A, A), (A, M))
    assert op.lookup(M, M)() == "AM"  # 2 + 0 beats 2 + 2


def test_arity_one_and_three():
    op1 = make_op((A,), (C,), arity=1)
    assert op1(B()) == "A"
    assert op1(C()) == "C"
    op3 = make_op((A, A, A), (A, B, A), (C, A, A), arity=3)
    # (A,B,A): 2+1+0=3 ; (C,A,A): 0+2+0=2 ; (A,A,A): 2+2+0=4
    assert op3(C(), C(), A()) == "CAA"
    assert op3(A(), B(), A()) == "ABA"


def test_only_the_leading_arity_arguments_are_dispatched():
    op = Operation("op", arity=1)
    op.register(A)(lambda a, *rest, **kw: (rest, kw))
    rest, kw = op(A(), 1, 2, flag=True)
    assert rest == (1, 2) and kw == {"flag": True}


def test_missing_raises_type_error_or_calls_the_default():
    op = make_op((A, A))
    with pytest.raises(TypeError, match=r"op: no implementation for \(X, A\)"):
        op(X(), A())
    op = make_op((A, A), missing=lambda tp, tq: f"nothing for {tp.__name__}/{tq.__name__}")
    with pytest.raises(TypeError, match="nothing for X/A"):
        op(X(), A())
    op = make_op((A, A), default=lambda *args: "default")
    assert op(X(), A()) == "default"
    assert op(A(), A()) == "AA"
    assert op.lookup(X, A) is None


# --------------------------------------------------------------------------------------------
# the real kl registry


class Isotropic(DiagGaussian):
    pass


def _diag(kind=DiagGaussian, shift=0.0):
    mean = jnp.arange(3.0) + shift
    return kind(mean, jnp.array([0.1, -0.2, 0.3]) * (1 + shift))


def _np_kl_diag(p, q):
    vp, vq = np.exp(np.asarray(p.log_var, np.float64)), np.exp(np.asarray(q.log_var, np.float64))
    diff = np.asarray(p.mean, np.float64) - np.asarray(q.mean, np.float64)
    return 0.5 * np.sum(diff**2 / vq + vp / vq - 1 - np.log(vp / vq), axis=-1)


def test_register_kl_duplicate_raises():
    with pytest.raises(ValueError, match=r"kl: \(DiagGaussian, DiagGaussian\) is already"):
        gkl_jax.register_kl(DiagGaussian, DiagGaussian)(lambda p, q: 0.0)
    with pytest.raises(ValueError, match="override=True"):
        gkl_jax.register_kl(Gaussian, Gaussian)(lambda p, q: 0.0)
    # the built-in kernel is still in place
    p, q = _diag(), _diag(shift=0.5)
    np.testing.assert_allclose(gkl_jax.kl(p, q), _np_kl_diag(p, q), rtol=1e-5)


def test_register_kl_subclass_is_used_and_reverse_pair_falls_back():
    p, q = _diag(Isotropic), _diag(Isotropic, shift=0.5)
    parent_value = gkl_jax.kl(_diag(), _diag(shift=0.5))
    # before registering: the parents' closed form
    assert kl_op.lookup(Isotropic, Isotropic) is kl_op.lookup(DiagGaussian, DiagGaussian)
    calls = []

    @gkl_jax.register_kl(Isotropic, Isotropic)
    def _kl_iso(p, q):
        calls.append((type(p), type(q)))
        return 2.0 * gkl_jax.kl(DiagGaussian(p.mean, p.spread), DiagGaussian(q.mean, q.spread))

    try:
        np.testing.assert_allclose(gkl_jax.kl(p, q), 2.0 * _np_kl_diag(p, q), rtol=1e-5)
        np.testing.assert_allclose(jax.jit(gkl_jax.kl)(p, q), 2.0 * parent_value, rtol=1e-6)
        assert calls and all(c == (Isotropic, Isotropic) for c in calls)
        # mixed pairs: (Isotropic, DiagGaussian) is nearer to (DiagGaussian, DiagGaussian)
        n = len(calls)
        np.testing.assert_allclose(gkl_jax.kl(p, _diag(shift=0.5)), _np_kl_diag(p, q), rtol=1e-5)
        np.testing.assert_allclose(gkl_jax.kl(_diag(), q), _np_kl_diag(p, q), rtol=1e-5)
        assert len(calls) == n
        # and the subclass against a full Gaussian still goes to the structured kernel
        assert kl_op.lookup(Isotropic, FullGaussian) is kl_op.lookup(DiagGaussian, FullGaussian)
        # registering it again raises; override=True replaces
        with pytest.raises(ValueError, match=r"\(Isotropic, Isotropic\).*override=True"):
            gkl_jax.register_kl(Isotropic, Isotropic)(_kl_iso)
        gkl_jax.register_kl(Isotropic, Isotropic, override=True)(lambda p, q: jnp.float32(7.0))
        assert float(gkl_jax.kl(p, q)) == 7.0
    finally:
        kl_op.unregister(Isotropic, Isotropic)
    np.testing.assert_allclose(gkl_jax.kl(p, q), parent_value, rtol=1e-6)


def test_register_kl_for_a_new_reverse_pair_only():
    @gkl_jax.register_kl(DiagGaussian, Isotropic)
    def _kl_diag_iso(p, q):
        return jnp.float32(-1.0)

    try:
        assert float(gkl_jax.kl(_diag(), _diag(Isotropic))) == -1.0
        # (Isotropic, Isotropic): (DiagGaussian, Isotropic) is at distance 1 + 0, nearer than
        # (DiagGaussian, DiagGaussian) at 1 + 1
        assert float(gkl_jax.kl(_diag(Isotropic), _diag(Isotropic))) == -1.0
        # (Isotropic, DiagGaussian) never reaches it
        p, q = _diag(Isotropic), _diag(shift=0.5)
        np.testing.assert_allclose(gkl_jax.kl(p, q), _np_kl_diag(p, q), rtol=1e-5)
    finally:
        kl_op.unregister(DiagGaussian, Isotropic)
    assert kl_op.lookup(DiagGaussian, Isotropic) is kl_op.lookup(DiagGaussian, DiagGaussian)


def test_kl_without_a_closed_form_points_to_kl_mc():
    mix = GaussianMixture(jnp.zeros(2), DiagGaussian(jnp.zeros((2, 3)), jnp.zeros((2, 3))))
    for p, q, names in [
        (mix, _diag(), "GaussianMixture || DiagGaussian"),
        (_diag(), mix, "DiagGaussian || GaussianMixture"),
        (mix, mix, "GaussianMixture || GaussianMixture"),
    ]:
        with pytest.raises(TypeError, match=r"kl: no closed form for KL\(" + names + r"\)") as e:
            gkl_jax.kl(p, q)
        assert "kl_mc" in str(e.value)


def test_kl_of_non_distributions_raises_type_error():
    with pytest.raises(TypeError, match=r"no closed form for KL\(ndarray \|\| DiagGaussian\)"):
        gkl_jax.kl(np.zeros(3), _diag())


# --------------------------------------------------------------------------------------------
# the real operations' registrations


def _impl(module, name):
    import importlib

    return getattr(importlib.import_module(module), name)


GAUSSIANS = [DiagGaussian, FullGaussian, LowRankGaussian]


@pytest.mark.parametrize("tp", GAUSSIANS)
@pytest.mark.parametrize("tq", GAUSSIANS)
def test_kl_registrations(tp, tq):
    want = (
        _impl("gkl_jax._src.kl.diag", "_kl_diag_diag")
        if tp is tq is DiagGaussian
        else _impl("gkl_jax._src.kl.structured", "_kl_structured")
    )
    assert kl_op.lookup(tp, tq) is want
    assert kl_op.lookup(GaussianMixture, tq) is None
    assert kl_op.lookup(tp, GaussianMixture) is None


@pytest.mark.parametrize(
    ("op", "types", "want"),
    [
        (structure, (FullGaussian,), "_full_structure"),
        (structure, (LowRankGaussian,), "_low_rank_structure"),
        (structure, (DiagGaussian,), "_diag_structure"),
        (structure, (Isotropic,), "_diag_structure"),
        (structure, (GaussianMixture,), None),
        (renyi_parts, (DiagGaussian, DiagGaussian), "_renyi_diag"),
        (renyi_parts, (Isotropic, DiagGaussian), "_renyi_diag"),
        (renyi_parts, (FullGaussian, DiagGaussian), "_renyi_generic"),
        (renyi_parts, (FullGaussian, FullGaussian), "_renyi_generic"),
        (renyi_parts, (LowRankGaussian, FullGaussian), "_renyi_generic"),
        (renyi_parts, (LowRankGaussian, LowRankGaussian), "_renyi_diag_low_rank"),
        (renyi_parts, (DiagGaussian, LowRankGaussian), "_renyi_diag_low_rank"),
        (renyi_parts, (LowRankGaussian, DiagGaussian), "_renyi_diag_low_rank"),
        (renyi_parts, (GaussianMixture, DiagGaussian), None),
        (wasserstein2_squared, (DiagGaussian, DiagGaussian), "_w2_diag"),
        (wasserstein2_squared, (DiagGaussian, FullGaussian), "_w2_generic"),
        (wasserstein2_squared, (LowRankGaussian, LowRankGaussian), "_w2_generic"),
        (wasserstein2_squared, (GaussianMixture, GaussianMixture), None),
        (draw_with_noise, (DiagGaussian,), "_draw_diag"),
        (draw_with_noise, (Isotropic,), "_draw_diag"),
        (draw_with_noise, (GaussianMixture,), "_draw_mixture"),
        (draw_with_noise, (FullGaussian,), None),
        (draw_with_noise, (LowRankGaussian,), None),
        (log_ratio_at_noise, (DiagGaussian, DiagGaussian), "_diag_log_ratio"),
        (log_ratio_at_noise, (FullGaussian, FullGaussian), None),
        (log_ratio_at_noise, (DiagGaussian, FullGaussian), None),
        (log_ratio_at_noise, (GaussianMixture, DiagGaussian), None),
        (as_mixture, (DiagGaussian,), "_diag_as_mixture"),
        (as_mixture, (GaussianMixture,), "_mixture_as_mixture"),
        (as_mixture, (FullGaussian,), None),
        (as_mixture, (LowRankGaussian,), None),
    ],
)
def test_real_operation_registrations(op, types, want):
    got = op.lookup(*types)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.__name__ == want
