#!/usr/bin/env bash
# Installs gkl_jax with the peer libraries the benchmarks compare against.
# distrax depends on tensorflow-probability, whose last release (0.25) does not import with
# current JAX; the nightly build of the same package does, so distrax is installed without its
# pinned dependency and tfp-nightly provides the TFP JAX substrate.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -e ".[bench,test,examples]"
pip install tfp-nightly dm-tree
pip install --no-deps distrax
