"""The runtime as an operator installs it: the wheel built from the checkout, installed into a fresh virtual
environment with only its own dependencies (no torch, no training or tooling code), running a real
`listings worker` against the test stack from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from devtools.workers import isolated, produce_raw
from support import TITLES, assert_categories, direct_categories, listing, redis_items, wait_for
from training.config import REPO, TrainingSettings

pytestmark = pytest.mark.stack


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{argv}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, installed offline from the project's wheelhouse into a new venv; returns its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheelhouse = TrainingSettings().cache_dir / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", REPO, cwd=tmp)
    [wheel] = (tmp / "dist").glob("listing_classifier-*.whl")
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    bin_dir = tmp / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", "--no-index", "--find-links", wheelhouse, wheel, cwd=tmp)
    return bin_dir


def test_the_wheel_holds_the_runtime_and_its_package_data_only(installed: Path) -> None:
    site = Path(
        run(
            installed / "python", "-c", "import stream, os; print(os.path.dirname(stream.__file__))", cwd=installed
        ).strip()
    )
    assert site.is_relative_to(installed.parent), site  # the installed copy, not the checkout
    assert (site / "sinks" / "lua" / "apply_result.lua").exists()
    heavy = ("torch", "onnxruntime", "training", "devtools", "sklearn")
    probe = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    assert run(installed / "python", "-c", probe, cwd=installed).strip() == "[]"
    help_text = run(installed / "listings", "--help", cwd=installed)
    commands = set(help_text.split("{", 1)[1].split("}", 1)[0].split(","))
    assert {"worker", "backfill", "promote", "review-ui"} <= commands
    assert not commands & {"train", "stack", "demo", "bench"}  # the developer tools are not in the runtime


def test_the_installed_worker_classifies_end_to_end(installed: Path, stack, tmp_path) -> None:
    s = isolated(stack, "wheel")
    ids = [f"whl-{i}" for i in range(12)]
    titles = [TITLES[i % len(TITLES)] for i in range(len(ids))]
    produce_raw(s, [listing(i, t) for i, t in zip(ids, titles, strict=True)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(s.to_env())
    env["LISTINGS_STATE_DIR"] = str(tmp_path / "state")  # a fresh folder outside the package
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [installed / "listings", "worker", "--metrics-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        tail = lambda: (tmp_path / "worker.log").read_text()[-3000:]  # noqa: E731
        wait_for(lambda: len(redis_items(s, ids)) == len(ids), 180, "results from the installed worker", tail)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    stored = redis_items(s, ids)
    assert_categories([stored[i]["category_id"] for i in ids], direct_categories(s, titles))
    assert (tmp_path / "state" / "faust").is_dir()
