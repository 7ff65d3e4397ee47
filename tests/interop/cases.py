"""The peer classes gkl_jax.interop converts, each built from one set of random float32 arrays,
with what it must become and its float64 mean and covariance (shared by the interop tests)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian
from tests.helpers import rand_tril

B, D, K = 3, 4, 2
PEER_MODULES = {
    "distrax": "distrax",
    "tfp": "tensorflow_probability.substrates.jax",
    "numpyro": "numpyro.distributions",
}


def peer(library: str) -> Any:
    """The library's distributions module, or a skip when it is not installed."""
    if library == "tfp":
        return pytest.importorskip("tensorflow_probability.substrates.jax").distributions
    return pytest.importorskip(PEER_MODULES[library])


def params(seed: int) -> dict[str, np.ndarray]:
    """float32 parameters, batch (B,), event size D, rank K: well separated across seeds."""
    rng = np.random.default_rng(seed)
    out = {
        "m": rng.standard_normal((B, D)),
        "s": np.exp(0.3 * rng.standard_normal((B, D))),
        "lv": 0.6 * rng.standard_normal((B, D)),
        "tril": rand_tril(rng, (B,), D),
        "w": 0.7 * rng.standard_normal((B, D, K)),
        "v": 0.7 * rng.standard_normal((B, D, K)),
        "pd": np.exp(0.3 * rng.standard_normal((B, K))),
        "c": np.exp(0.3 * rng.standard_normal((B, D))),
    }
    out = {k: v.astype(np.float32) for k, v in out.items()}
    out["cov"] = (out["tril"] @ np.swapaxes(out["tril"], -1, -2)).astype(np.float32)
    out["up"] = np.swapaxes(out["tril"], -1, -2).copy()  # an upper-triangular scale
    return out


def f64(x: Any) -> np.ndarray:
    return np.asarray(x, np.float64)


def _diag_cov(var: np.ndarray) -> np.ndarray:
    return var[..., None] * np.eye(var.shape[-1])


def _scale_cov(s: np.ndarray) -> np.ndarray:
    return s @ np.swapaxes(s, -1, -2)


@dataclasses.dataclass(frozen=True)
class Case:
    """A peer class: ``build(lib, P)`` the object, ``expect(P)`` the gkl_jax Gaussian it must
    equal bit for bit (None: the conversion computes, compare ``dense``), ``dense(P)`` the float64
    ``(mean, cov)`` (event axis last; event size 1 for a bare Normal)."""

    name: str
    library: str
    build: Callable[[Any, dict], Any]
    expect: Callable[[dict], Any] | None
    dense: Callable[[dict], tuple[np.ndarray, np.ndarray]]
    kind: type

    def __str__(self) -> str:
        return self.name


def _scalar(p):
    return f64(p["m"])[..., None], f64(p["s"])[..., None, None] ** 2


def _diag_std(p):
    return f64(p["m"]), _diag_cov(f64(p["s"]) ** 2)


def _tril(p):
    return f64(p["m"]), _scale_cov(f64(p["tril"]))


def _low_rank_cov(p):
    w = f64(p["w"])
    return f64(p["m"]), _scale_cov(w) + _diag_cov(f64(p["c"]))


def _dx_dplr(p):
    s = np.eye(D) * f64(p["s"])[..., None, :] + f64(p["w"]) @ np.swapaxes(f64(p["v"]), -1, -2)
    return f64(p["m"]), _scale_cov(s)


def _tfp_dplr(p):
    w = f64(p["w"])
    s = np.eye(D) * f64(p["s"])[..., None, :] + (w * f64(p["pd"])[..., None, :]) @ np.swapaxes(
        w, -1, -2
    )
    return f64(p["m"]), _scale_cov(s)


def _lsn(p):
    return f64(p["m"]), _diag_cov(np.exp(f64(p["lv"])))


CASES = [
    # distrax
    Case(
        "distrax.Normal",
        "distrax",
        lambda x, p: x.Normal(p["m"], p["s"]),
        lambda p: DiagGaussian(p["m"][..., None], std=p["s"][..., None]),
        _scalar,
        DiagGaussian,
    ),
    Case(
        "distrax.Independent(LogStddevNormal)",
        "distrax",
        lambda x, p: x.Independent(x.LogStddevNormal(p["m"], 0.5 * p["lv"]), 1),
        lambda p: DiagGaussian(p["m"], 2.0 * (0.5 * p["lv"])),
        _lsn,
        DiagGaussian,
    ),
    Case(
        "distrax.Independent(Normal)",
        "distrax",
        lambda x, p: x.Independent(x.Normal(p["m"], p["s"]), 1),
        lambda p: DiagGaussian(p["m"], std=p["s"]),
        _diag_std,
        DiagGaussian,
    ),
    Case(
        "distrax.MultivariateNormalDiag",
        "distrax",
        lambda x, p: x.MultivariateNormalDiag(p["m"], p["s"]),
        lambda p: DiagGaussian(p["m"], std=p["s"]),
        _diag_std,
        DiagGaussian,
    ),
    Case(
        "distrax.MultivariateNormalTri",
        "distrax",
        lambda x, p: x.MultivariateNormalTri(p["m"], p["tril"]),
        lambda p: FullGaussian(p["m"], p["tril"]),
        _tril,
        FullGaussian,
    ),
    Case(
        "distrax.MultivariateNormalTri(is_lower=False)",
        "distrax",
        lambda x, p: x.MultivariateNormalTri(p["m"], p["up"], is_lower=False),
        None,
        lambda p: (f64(p["m"]), _scale_cov(f64(p["up"]))),
        FullGaussian,
    ),
    Case(
        "distrax.MultivariateNormalFullCovariance",
        "distrax",
        lambda x, p: x.MultivariateNormalFullCovariance(p["m"], p["cov"]),
        None,
        lambda p: (f64(p["m"]), f64(p["cov"])),
        FullGaussian,
    ),
    Case(
        "distrax.MultivariateNormalDiagPlusLowRank",
        "distrax",
        lambda x, p: x.MultivariateNormalDiagPlusLowRank(p["m"], p["s"], p["w"], p["v"]),
        None,
        _dx_dplr,
        FullGaussian,
    ),
    # TFP on JAX
    Case(
        "tfp.Normal",
        "tfp",
        lambda x, p: x.Normal(p["m"], p["s"]),
        lambda p: DiagGaussian(p["m"][..., None], std=p["s"][..., None]),
        _scalar,
        DiagGaussian,
    ),
    Case(
        "tfp.Independent(Normal)",
        "tfp",
        lambda x, p: x.Independent(x.Normal(p["m"], p["s"]), 1),
        lambda p: DiagGaussian(p["m"], std=p["s"]),
        _diag_std,
        DiagGaussian,
    ),
    Case(
        "tfp.MultivariateNormalDiag",
        "tfp",
        lambda x, p: x.MultivariateNormalDiag(p["m"], p["s"]),
        lambda p: DiagGaussian(p["m"], std=p["s"]),
        _diag_std,
        DiagGaussian,
    ),
    Case(
        "tfp.MultivariateNormalTriL",
        "tfp",
        lambda x, p: x.MultivariateNormalTriL(p["m"], p["tril"]),
        lambda p: FullGaussian(p["m"], p["tril"]),
        _tril,
        FullGaussian,
    ),
    Case(
        "tfp.MultivariateNormalFullCovariance",
        "tfp",
        lambda x, p: x.MultivariateNormalFullCovariance(p["m"], p["cov"]),
        None,
        lambda p: (f64(p["m"]), f64(p["cov"])),
        FullGaussian,
    ),
    Case(
        "tfp.MultivariateNormalDiagPlusLowRank",
        "tfp",
        lambda x, p: x.MultivariateNormalDiagPlusLowRank(p["m"], p["s"], p["w"], p["pd"]),
        None,
        _tfp_dplr,
        FullGaussian,
    ),
    Case(
        "tfp.MultivariateNormalDiagPlusLowRankCovariance",
        "tfp",
        lambda x, p: x.MultivariateNormalDiagPlusLowRankCovariance(p["m"], p["c"], p["w"]),
        lambda p: LowRankGaussian(p["m"], p["w"], jnp.log(p["c"])),
        _low_rank_cov,
        LowRankGaussian,
    ),
    # numpyro
    Case(
        "numpyro.Normal",
        "numpyro",
        lambda x, p: x.Normal(p["m"], p["s"]),
        lambda p: DiagGaussian(p["m"][..., None], std=p["s"][..., None]),
        _scalar,
        DiagGaussian,
    ),
    Case(
        "numpyro.Normal.to_event(1)",
        "numpyro",
        lambda x, p: x.Normal(p["m"], p["s"]).to_event(1),
        lambda p: DiagGaussian(p["m"], std=p["s"]),
        _diag_std,
        DiagGaussian,
    ),
    Case(
        "numpyro.Normal.expand.to_event(1)",
        "numpyro",
        lambda x, p: x.Normal(p["m"][0], p["s"][0]).expand((B, D)).to_event(1),
        lambda p: DiagGaussian(np.broadcast_to(p["m"][0], (B, D)), std=p["s"][0]),
        lambda p: (
            np.broadcast_to(f64(p["m"][0]), (B, D)),
            np.broadcast_to(_diag_cov(f64(p["s"][0]) ** 2), (B, D, D)),
        ),
        DiagGaussian,
    ),
    Case(
        "numpyro.MultivariateNormal(scale_tril)",
        "numpyro",
        lambda x, p: x.MultivariateNormal(p["m"], scale_tril=p["tril"]),
        lambda p: FullGaussian(p["m"], p["tril"]),
        _tril,
        FullGaussian,
    ),
    Case(
        "numpyro.MultivariateNormal(covariance_matrix)",
        "numpyro",
        lambda x, p: x.MultivariateNormal(p["m"], covariance_matrix=p["cov"]),
        None,
        lambda p: (f64(p["m"]), f64(p["cov"])),
        FullGaussian,
    ),
    Case(
        "numpyro.LowRankMultivariateNormal",
        "numpyro",
        lambda x, p: x.LowRankMultivariateNormal(p["m"], p["w"], p["c"]),
        lambda p: LowRankGaussian(p["m"], p["w"], jnp.log(p["c"])),
        _low_rank_cov,
        LowRankGaussian,
    ),
]


def build(case: Case, seed: int) -> tuple[Any, dict]:
    """``(peer object, its parameters)`` (skips when the case's library is missing)."""
    p = params(seed)
    return case.build(peer(case.library), p), p


def peer_kl(library: str, a: Any, b: Any) -> Any:
    """The library's own KL(a || b), or None when it has none for the pair (the libraries'
    internals broadcast by rank promotion, which tests/conftest.py makes an error)."""
    try:
        with jax.numpy_rank_promotion("allow"):
            if library == "distrax":
                return a.kl_divergence(b)
            if library == "tfp":
                return peer("tfp").kl_divergence(a, b)
            return peer("numpyro").kl_divergence(a, b)
    except NotImplementedError:
        return None


def installed(library: str) -> bool:
    try:
        importlib.import_module(PEER_MODULES[library])
    except ImportError:
        return False
    return True
