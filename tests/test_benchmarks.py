"""``python -m benchmarks --quick`` runs every benchmark section on tiny sizes (a smoke test: the
benchmarks must keep running as the library changes; it times nothing and asserts no speed)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cache = os.environ.get("GKL_JAX_TEST_CACHE") or str(ROOT / ".jax_cache")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=cache,  # the tests' persistent cache: repeated runs are fast
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return res, out


def test_quick_run_succeeds_and_writes_every_section(quick_run):
    from benchmarks.run import sections

    res, out = quick_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    written = {p.stem for p in out.glob("*.md")}
    found = sections()
    scripts = {name for name, fn in found.items() if getattr(fn, "writes_own_file", False)}
    # the stand-alone scripts (many seeds, subprocesses) run only without --quick
    assert {"coverage", "knn", "mc_speed", "memory"} <= scripts
    assert (set(found) - scripts) | {"summary"} <= written
    summary = (out / "summary.md").read_text()
    assert "Machine:" in summary and "FAILED" not in summary
    for name in ("diag_small", "diag_large", "vae_step", "full", "accuracy_diag", "knn_speed"):
        assert f"## {name}" in summary
    for name in scripts:
        assert f"## {name}" in summary and f"python benchmarks/{name}.py" in summary


def test_missing_plugins_are_skipped_and_present_ones_registered(tmp_path, monkeypatch):
    from benchmarks import run

    monkeypatch.setattr(run, "PLUGINS", ("no_such_benchmark",))
    found = run.sections()
    assert "skipped" in found["no_such_benchmark"](True)
    assert list(found)[: len(run.SECTIONS)] == list(run.SECTIONS)


def test_unknown_section_is_an_error():
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and "unknown sections" in res.stderr


def test_readme_block_is_the_tables_of_one_run(quick_run, tmp_path):
    import shutil

    from benchmarks import readme

    _, out = quick_run
    results = tmp_path / "results"
    shutil.copytree(out, results)
    text = readme.block(results)
    assert text.count("Machine:") == 1 and "python -m benchmarks --quick" in text
    assert "#### Diagonal KL, (256, 64)" in text and "#### KL, full covariance" in text
    assert "Flax NNX VAE train step" in text and "kNN KL from samples" in text
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{readme.START}\nold tables\n{readme.END}\nrest\n")
    readme.main(doc, results)
    assert doc.read_text() == f"intro\n{readme.START}\n{text}\n{readme.END}\nrest\n"
    # files of two different runs are refused
    vae = results / "vae_step.md"
    vae.write_text(vae.read_text().replace("load", "LOAD", 1))
    with pytest.raises(ValueError, match="different runs"):
        readme.block(results)


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_child_that_stops_using_the_cpu_is_killed():
    import time

    from benchmarks import _timing

    t0 = time.monotonic()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert _timing.run_watched(sleeper, timeout=120, idle=2.0) is None
    assert time.monotonic() - t0 < 30
    assert _timing.run_watched([sys.executable, "-c", "print('ok')"], timeout=60) == "ok\n"
    with pytest.raises(subprocess.CalledProcessError):
        _timing.run_watched([sys.executable, "-c", "raise SystemExit(3)"], timeout=60)
