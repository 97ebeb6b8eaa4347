"""Fixtures of the Python package's tests: the CLI to compare against, and loaded sessions.

The CLI is `$ROUTELAB_CLI`, else the `routelab` binary cargo built (in `$CARGO_TARGET_DIR` or
the workspace's `target/`, release before debug)."""

import os
import pathlib
import subprocess

import pytest

import routelab

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "models"


def _find_cli():
    if os.environ.get("ROUTELAB_CLI"):
        return pathlib.Path(os.environ["ROUTELAB_CLI"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        p = target / profile / "routelab"
        if p.exists():
            return p
    raise RuntimeError(f"no routelab binary under {target}: build it (cargo build) or set ROUTELAB_CLI")


CLI = _find_cli()


def cli(*args, check=True):
    """Runs the CLI; returns (stdout, stderr). With check, a failure fails the test."""
    p = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"routelab {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p.stdout, p.stderr, p.returncode


def cli_error(*args):
    """The message the CLI prints for a failing command (its `error: ` line, prefix removed)."""
    out, err, rc = cli(*args, check=False)
    assert rc != 0, f"routelab {' '.join(map(str, args))} succeeded"
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert lines, err
    return lines[-1][len("error: ") :]


def cli_hint(*args):
    """The CLI's `hint: ` line for a failing command (prefix removed), or None."""
    out, err, rc = cli(*args, check=False)
    assert rc != 0, f"routelab {' '.join(map(str, args))} succeeded"
    lines = [l for l in err.splitlines() if l.startswith("hint: ")]
    return lines[-1][len("hint: ") :] if lines else None


@pytest.fixture(scope="session")
def moe():
    return routelab.load("tiny-moe", progress=False)


@pytest.fixture(scope="session")
def dense():
    return routelab.load("tiny-dense", progress=False)
