"""The implementation of gkl_jax; the public API is re-exported flat from ``gkl_jax``.

Data path: arrays (mean, log_var | var | std | scale_tril | factor) -> a distribution pytree
(``distributions/``) -> a closed-form kernel on arrays, found by type dispatch (``kl/``,
``divergences.py``) -> a reduction over the latent axis. The array API (``kl_diag``) and the pytree
API (``kl``) call the same kernels.

One concept per file::

    base.py                 Distribution / Gaussian (equinox.Module pytree base), Estimate;
                            batch indexing p[i] for every type (from array_field)
    dispatch.py             Operation: the one type registry (closest pair by MRO, no silent
                            overrides) behind kl, the divergences and the Monte Carlo parts
    numerics.py             phi(x) = e^x - 1 - x, exact log-ratios, the dtype policy, row sums
    checks.py               trace-time shape/dtype errors; value checks only in checked mode
    eager.py                compiled: an eager call of a public function runs one executable
    linalg.py               blocked triangular solves and Cholesky (no LAPACK), Woodbury, whitening
    lapack.py               QR, SVD, eigh, LU solves: on CPU one matrix at a time (jaxlib 0.10 hang)
    distributions/diag.py       DiagGaussian (keeps log_var | var | std as given)
    distributions/full.py       FullGaussian (Cholesky factor)
    distributions/low_rank.py   LowRankGaussian (W W^T + diag)
    distributions/mixture.py    GaussianMixture (diagonal components)
    kl/registry.py          kl(p, q, axis=...) and register_kl; the axis reduction of a pair
    kl/cross_entropy.py     cross_entropy(p, q) = KL(p || q) + H(p), exact
    kl/diag.py              kl_diag, kl_diag_standard: the exact diagonal kernel
    kl/structured.py        kl_full and every pair with a full or low-rank member
    kl/mixture.py           Hershey-Olsen approximation and upper bound for mixtures
    divergences.py          Jeffreys, Renyi, Bhattacharyya, Hellinger
    wasserstein.py          Wasserstein-2 from L_q and the exact difference L_p - L_q
    monte_carlo.py          kl_mc: k1/k2/k3, antithetic pairs, control variates, stderr
    from_samples.py         kl_from_samples: kNN (WKV 2009) and moment-fit estimators
    compare.py              compare_posteriors, Comparison: two models' posteriors of the same
                            inputs, KL both ways, per example and per latent dimension
    ../nnx/                 public Flax NNX modules (needs flax): head.py GaussianHead, prior.py
                            MixturePrior, vae.py VAE and ELBOTerms, twin.py TwinVAE
    interop_hook.py         as_distribution: converts distrax / TFP / numpyro Gaussians at the
                            entry of kl, check_gaussian_pair and kl_mc (imports no peer)
    ../interop/             public distrax / TFP / numpyro conversion (needs the interop extra):
                            _core.py as_gaussian, convert; _distrax.py, _tfp.py, _numpyro.py one
                            per library, imported only once that library is in use
    aggregate.py            kl_aggregate, kl_aggregate_prior, kl_decomposition (MI, TC,
                            dimension-wise KL): N posteriors as their aggregate q(z), chunked
    align.py                align_latents, Alignment: permutation/sign or Procrustes map
                            between two models' latent axes, applied to Gaussians
    mesh.py                 batch_mesh, shard_batch: the 1-D "batch" mesh of gkl_jax.sharding
    streaming.py            stream, stream_comparison: per-example statistics of a dataset of
                            batches reduced on device (double-word sums, extrema, histograms)
    ring.py                 kNN and aggregate-posterior estimators with both sets sharded: the
                            reference blocks circulate in a ppermute ring (../sharding.py)

Adding a distribution type is one new file under ``distributions/`` (its fields declared with
``base.array_field``, which gives it batch indexing) plus registrations on the operations it
supports (``register_kl``, ``structure``, ``renyi_parts``, ``wasserstein2_squared``,
``draw_with_noise``, ``as_mixture``, ``log_ratio_at_noise``).
"""
