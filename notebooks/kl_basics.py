# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # KL between two Gaussians given as `mu` and a variance vector
#
# *"I have two multivariate Gaussian distributions, each defined by a vector of mu and a vector
# of variance (like a VAE's mu and sigma layers). What is the best way to calculate the KL
# between them? Is it even doable, since I do not have the covariance matrix? If not, can I take
# samples from both and calculate the KL between the samples? Is there a built-in function?"*
#
# 1. **It is doable, exactly, from the vectors alone.** A VAE encoder's Gaussian has a
#    *diagonal* covariance, `diag(sigma^2)`: the vectors *are* the covariance matrix. The KL of
#    two diagonal Gaussians is a sum over latent dimensions,
#
#    $$KL(p\|q) = \tfrac12 \sum_i \Big[\frac{(\mu_{p,i}-\mu_{q,i})^2}{\sigma^2_{q,i}} +
#      \varphi\big(\log\sigma^2_{p,i} - \log\sigma^2_{q,i}\big)\Big],\qquad
#      \varphi(x) = e^x - 1 - x .$$
#
# 2. **Sampling gives a noisy estimate of that same number** (with densities), or a biased one
#    (from samples alone). Neither is needed when the closed form exists.
# 3. **Built-in:** `gkl_jax.kl_diag(mu_p, log_var_p, mu_q, log_var_q)` (or `param="var"` /
#    `"std"` for a variance or sigma layer). `torch.nn.functional.kl_div`, suggested in the
#    thread, is something else: the KL between two *discrete* distributions given as
#    log-probabilities and probabilities over the same support, not between two sets of samples.
#
# This notebook shows each point with numbers and plots; it runs in well under a minute on a CPU.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import gkl_jax

start = time.perf_counter()
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## 1. Two encoders' outputs, and their KL from the four vectors
#
# Stand-ins for two VAE encoders evaluated on the same 256 inputs, with an 8-dimensional latent
# space: each gives a mean and a log-variance vector per input. (`notebooks/twin_vae.py` does
# this with two trained VAEs.)

# %%
rng = np.random.default_rng(0)
n_inputs, d = 256, 8
mu_a = rng.normal(size=(n_inputs, d)).astype(np.float32)
log_var_a = rng.uniform(-2.0, 0.5, (n_inputs, d)).astype(np.float32)
mu_b = (mu_a + 0.3 * rng.normal(size=(n_inputs, d))).astype(np.float32)
log_var_b = (log_var_a + 0.3 * rng.normal(size=(n_inputs, d))).astype(np.float32)

kl_ab = gkl_jax.kl_diag(mu_a, log_var_a, mu_b, log_var_b)  # (256,): one KL per input
kl_ba = gkl_jax.kl_diag(mu_b, log_var_b, mu_a, log_var_a)  # the other direction
terms = gkl_jax.kl_diag(mu_a, log_var_a, mu_b, log_var_b, axis=())  # (256, 8): per dimension
print(f"KL(a || b) per input: median {np.median(kl_ab):.4f}, max {np.max(kl_ab):.4f} nats")
print(f"KL(b || a) per input: median {np.median(kl_ba):.4f} (KL is not symmetric)")
print("mean KL term per latent dimension:", np.round(np.mean(terms, axis=0), 4))

# %% [markdown]
# A variance layer or a sigma layer goes in as it is (`param="var"` / `"std"`), and the
# pytree API (`DiagGaussian`, `kl`) gives the same numbers. For one input, the textbook
# formula with the covariance matrices written out (`diag(var)`, float64) agrees: nothing was
# lost by not having "the covariance matrix".

# %%
var_a, var_b = np.exp(log_var_a), np.exp(log_var_b)
kl_var = gkl_jax.kl_diag(mu_a, var_a, mu_b, var_b, param="var")
kl_std = gkl_jax.kl_diag(mu_a, np.sqrt(var_a), mu_b, np.sqrt(var_b), param="std")
p, q = gkl_jax.DiagGaussian(mu_a, log_var_a), gkl_jax.DiagGaussian.from_var(mu_b, var_b)
print("log_var, var, std and pytree APIs agree:", all(
    np.allclose(other, kl_ab, rtol=1e-5) for other in (kl_var, kl_std, gkl_jax.kl(p, q))
))  # fmt: skip

cov_p = np.diag(var_a[0].astype(np.float64))  # the covariance matrix of input 0 under a
cov_q = np.diag(var_b[0].astype(np.float64))
dm = mu_b[0].astype(np.float64) - mu_a[0]
dense = 0.5 * (
    np.trace(np.linalg.inv(cov_q) @ cov_p) + dm @ np.linalg.inv(cov_q) @ dm - d
    + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
)  # fmt: skip
print(f"input 0: kl_diag {float(kl_ab[0]):.7f}, dense-covariance formula {dense:.7f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
bins = np.linspace(0, float(max(kl_ab.max(), kl_ba.max())), 40)
axes[0].hist(np.asarray(kl_ab), bins=bins, alpha=0.6, label="KL(a || b)")
axes[0].hist(np.asarray(kl_ba), bins=bins, alpha=0.6, label="KL(b || a)")
axes[0].set(xlabel="KL [nats]", ylabel="inputs", title="Per input (closed form)")
axes[0].legend()
axes[1].bar(np.arange(d), np.mean(terms, axis=0))
axes[1].set(xlabel="latent dimension", ylabel="mean KL term", title="Per latent dimension")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. What sampling gives instead
#
# ### 2a. Monte Carlo with densities
#
# Draw `x ~ p` and average `log p(x) - log q(x)` (the "k1" estimator), or `r - 1 - log r` with
# `r = q(x) / p(x)` ("k3", never negative). `gkl_jax.kl_mc` does this and reports a standard
# error. Both are unbiased, but each estimate is one noisy draw of the number the closed form
# gives exactly. Below, for input 0, 1000 independent estimates at each sample size (each the
# average over the first `n` of its own 4096 draws): their spread shrinks like
# `1 / sqrt(n)`, never to zero. (`kl_mc` also offers antithetic pairs and control variates; it
# is the tool when there is no closed form: a mixture prior, a VampPrior, any log-density.)

# %%
p0, q0 = p[0], q[0]  # the posteriors of input 0 (indexing a batch of distributions)
exact0 = float(gkl_jax.kl(p0, q0))
one = gkl_jax.kl_mc(jax.random.key(0), p0, q0, num_samples=1024, estimator="k1",
                    antithetic=False, control_variates=False)  # fmt: skip
print(f"closed form: {exact0:.6f}; one kl_mc estimate (1024 draws): {float(one.value):.4f} "
      f"+- {float(one.stderr):.4f}")  # fmt: skip


@jax.jit
def log_ratios(key):  # log p(x) - log q(x) for 1000 x 4096 draws x ~ p
    x = p0.sample(key, (1000, 4096))
    return p0.log_prob(x) - q0.log_prob(x)


lr = np.asarray(log_ratios(jax.random.key(1)), np.float64)
sizes = [16, 64, 256, 1024, 4096]
plain = {n: lr[:, :n].mean(axis=1) for n in sizes}  # k1 estimates
k3 = {n: (np.expm1(-lr[:, :n]) + lr[:, :n]).mean(axis=1) for n in sizes}  # r - 1 - log r
for n in sizes:
    print(
        f"n = {n:5d}: k1 mean {plain[n].mean():.4f}, spread (std) {plain[n].std():.4f}; "
        f"k3 mean {k3[n].mean():.4f}, spread {k3[n].std():.4f}"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].violinplot([plain[n] for n in sizes], positions=np.log2(sizes), widths=1.5)
axes[0].axhline(exact0, color="k", ls="--", lw=1, label=f"closed form {exact0:.4f}")
axes[0].set_xticks(np.log2(sizes), [str(n) for n in sizes])
axes[0].set(xlabel="samples per estimate", ylabel="KL estimate",
            title="1000 Monte Carlo estimates (k1) per size")  # fmt: skip
axes[0].legend()
axes[1].loglog(sizes, [plain[n].std() for n in sizes], "o-", label="k1: log p - log q")
axes[1].loglog(sizes, [k3[n].std() for n in sizes], "s-", label="k3: r - 1 - log r")
ref = plain[sizes[0]].std() * np.sqrt(sizes[0] / np.array(sizes))
axes[1].loglog(sizes, ref, "k:", label="1 / sqrt(n)")
axes[1].set(xlabel="samples per estimate", ylabel="spread of the estimates (std)",
            title="It narrows like 1/sqrt(n); the closed form has none")  # fmt: skip
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ### 2b. From samples alone (no densities)
#
# The thread's other suggestion: sample `x1 ~ p`, `x2 ~ q` and compute a KL "between the
# samplings". `torch.nn.functional.kl_div(x1, x2)` does not do that: it computes
# `sum(x2 * (log x2 - x1))`, which for Gaussian samples (negative values) is not even defined:

# %%
x1 = p0.sample(jax.random.key(1), (5,))
x2 = q0.sample(jax.random.key(2), (5,))
print("kl_div-style formula on samples:", float(jnp.sum(x2 * (jnp.log(x2) - x1))))

# %% [markdown]
# A genuine sample-only estimator exists: the k-nearest-neighbour estimator of Wang, Kulkarni &
# Verdu (2009), `gkl_jax.kl_from_samples(x_p, x_q)` (by default a weighted ensemble over
# neighbour ranks that cancels most of its bias, Moon & Hero 2014). It needs no density, but at
# a finite sample size it is still **biased**, more so in more dimensions; it returns a
# `BiasedEstimate`, whose error bar (a jackknife) measures the sampling noise only, not the
# bias. Below, 40 repetitions per sample size, for the 8-dimensional pair of input 0 and for its
# first two dimensions alone.

# %%
knn = {
    "plain k = 1": jax.jit(lambda a, b: gkl_jax.kl_from_samples(a, b, k=1).value),
    "ensemble (default)": jax.jit(lambda a, b: gkl_jax.kl_from_samples(a, b).value),
}
draw = jax.jit(lambda key, a, b, n: (a.sample(key, n), b.sample(jax.random.fold_in(key, 1), n)),
               static_argnums=3)  # fmt: skip
n_sizes, reps = [300, 1000, 3000], 40
curves = {}
for dims in (2, 8):
    pd, qd = (gkl_jax.DiagGaussian(g.mean[:dims], g.log_var[:dims]) for g in (p0, q0))
    truth = float(gkl_jax.kl(pd, qd))
    samples = [[draw(jax.random.key(r), pd, qd, n) for r in range(reps)] for n in n_sizes]
    for name, est in knn.items():
        runs = np.array([[float(est(*xy)) for xy in row] for row in samples])
        curves[dims, name] = (truth, runs)
        for n, row in zip(n_sizes, runs, strict=True):
            print(
                f"d = {dims}, {name:>18s}, N = M = {n:5d}: mean {row.mean():.4f} (truth "
                f"{truth:.4f}), bias {row.mean() - truth:+.4f} +- {row.std() / np.sqrt(reps):.4f}, "
                f"spread {row.std():.4f}"
            )

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, dims in zip(axes, (2, 8), strict=True):
    for i, name in enumerate(knn):
        truth, runs = curves[dims, name]
        mean, std = runs.mean(axis=1), runs.std(axis=1)
        x = np.asarray(n_sizes) * (1.06 if i else 1 / 1.06)  # side by side
        ax.errorbar(x, mean, yerr=std, fmt="o-", color=f"C{i}", capsize=3, alpha=0.6,
                    label=f"{name}: mean +- std of {reps}")  # fmt: skip
        ax.errorbar(x, mean, yerr=2 * std / np.sqrt(reps), fmt="none", ecolor="C3", capsize=5,
                    lw=2, label="its mean +- 2 standard errors" if i else None)  # fmt: skip
    ax.axhline(truth, color="k", ls="--", lw=1, label=f"closed form {truth:.4f}")
    ax.set(xscale="log", xlabel="N = M samples", ylabel="KL estimate", title=f"kNN, d = {dims}")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# A sample-only estimate carries two errors: its noise (the long bars, which a single
# estimate's jackknife error bar describes) and its bias (the offset of the red bars from the
# closed form, which no error bar of one estimate shows). The plain `k = 1` estimator's bias
# shrinks slowly with `N` and grows with the dimension; the default ensemble cancels most of it
# (at a few times the cost, and a wider spread), but not all: in 16 dimensions its mean bias is
# still ~0.15 nats at these sizes (`benchmarks/results/knn.md`). The closed form has neither
# error.
#
# ## 3. Nearly identical encoders: where the textbook formula loses its digits
#
# Distillation, two seeds of one model, or a PPO policy update give pairs that differ by a tiny
# amount. The textbook expression `0.5 * sum(log(v_q / v_p) + (v_p + (mu_p - mu_q)^2) / v_q - 1)`
# then subtracts numbers close to 1 from each other, and float32 keeps only ~7 digits of them.
# `gkl_jax` computes `phi(x) = e^x - 1 - x` without that cancellation. The reference is the exact
# KL of the same float32 inputs, in float64 with a series for `phi` near 0.


# %%
def textbook(mu_p, lv_p, mu_q, lv_q):
    v_p, v_q = jnp.exp(lv_p), jnp.exp(lv_q)
    return 0.5 * jnp.sum(lv_q - lv_p + (v_p + (mu_p - mu_q) ** 2) / v_q - 1.0, axis=-1)


def reference(mu_p, lv_p, mu_q, lv_q):  # float64, no cancellation
    mu_p, lv_p, mu_q, lv_q = (np.asarray(a, np.float64) for a in (mu_p, lv_p, mu_q, lv_q))
    x = lv_p - lv_q  # exact: a difference of two float32 numbers in float64
    series = x**2 / 2 + x**3 / 6 + x**4 / 24 + x**5 / 120 + x**6 / 720
    phi = np.where(np.abs(x) < 1e-2, series, np.expm1(x) - x)
    return 0.5 * np.sum((mu_p - mu_q) ** 2 * np.exp(-lv_q) + phi, axis=-1)


deltas = 10.0 ** -np.arange(1, 8)
err_ours, err_textbook, negative = [], [], []
for delta in deltas:
    mu_c = (mu_a + delta * rng.normal(size=mu_a.shape)).astype(np.float32)
    lv_c = (log_var_a + delta * rng.normal(size=mu_a.shape)).astype(np.float32)
    ref = reference(mu_a, log_var_a, mu_c, lv_c)
    ours = np.asarray(gkl_jax.kl_diag(mu_a, log_var_a, mu_c, lv_c), np.float64)
    naive = np.asarray(textbook(mu_a, log_var_a, mu_c, lv_c), np.float64)
    err_ours.append(np.max(np.abs(ours - ref) / ref))
    err_textbook.append(np.max(np.abs(naive - ref) / ref))
    negative.append(int(np.sum(naive < 0)))
print(" perturbation   gkl_jax rel. err   textbook rel. err   textbook KL < 0")
for delta, a, b, neg in zip(deltas, err_ours, err_textbook, negative, strict=True):
    print(f"   {delta:8.0e}      {a:10.1e}          {b:10.1e}        {neg:4d} of {n_inputs}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].loglog(deltas, err_textbook, "o-", label="textbook formula (float32)")
axes[0].loglog(deltas, err_ours, "s-", label="gkl_jax.kl_diag (float32)")
axes[0].axhline(np.finfo(np.float32).eps, color="k", ls=":", lw=1, label="float32 epsilon")
axes[0].invert_xaxis()
axes[0].set(xlabel="relative perturbation between the encoders",
            ylabel="max relative error of KL", title="Nearly identical pairs")  # fmt: skip
axes[0].legend()
digits = lambda e: np.clip(-np.log10(np.array(e)), 0, None)  # noqa: E731
width = 0.4
x_pos = np.arange(len(deltas))
axes[1].bar(x_pos - width / 2, digits(err_textbook), width, label="textbook")
axes[1].bar(x_pos + width / 2, digits(err_ours), width, label="gkl_jax")
axes[1].set_xticks(x_pos, [f"{x:.0e}" for x in deltas])
axes[1].set(xlabel="relative perturbation", ylabel="correct digits", ylim=(0, 9),
            title="Digits kept (float32 holds ~7)")  # fmt: skip
axes[1].legend(ncol=2, loc="upper center")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Answer
#
# * Use the closed form: `gkl_jax.kl_diag(mu_p, log_var_p, mu_q, log_var_q)` (`param="var"` or
#   `"std"` for a variance or sigma layer), one value per input, or `axis=()` for per-dimension
#   terms. It needs no covariance matrix and no samples, and it is exact in float32 even for
#   nearly identical encoders, where the textbook formula keeps few or no correct digits.
# * Monte Carlo with densities (`gkl_jax.kl_mc`) estimates the same number with noise that falls
#   like `1 / sqrt(n)`: for pairs without a closed form.
# * Estimating from samples alone (`gkl_jax.kl_from_samples`) is possible but biased at finite
#   sample sizes, more so in higher dimensions: for when there are no densities at all.

# %%
print(f"notebook ran in {time.perf_counter() - start:.1f} s")
