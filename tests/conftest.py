"""Shared fixtures and helpers for the ddpm test suite.

* ``run_in_subprocess(code)`` runs Python code in a fresh interpreter, so a
  bad-input test whose call might crash the process (segfault, abort) becomes a
  failed test instead of a dead test runner (CONVENTIONS.md, rule 15).
* Every test gets its thread count restored afterwards (an autouse fixture),
  so a test that calls ``ddpm.set_num_threads`` cannot leak into the next one.
* A lesson notebook that tests/test_browser.py runs in this session (Run All in a
  real JupyterLab, every output checked for errors) is not executed a second time
  by tests/test_notebooks.py's nbclient run: that test is skipped, saying why.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ddpm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AdamTrack:
    """Compare parameters after a few AdamW steps with PyTorch's.

    Adam's first step moves an element by lr * g / (|g| + eps), eps = 1e-8: an
    element whose gradient is at float32 rounding level (|g| ~ 1e-8 when the
    largest are ~1e-2) moves by a fraction of lr set by rounding noise, in any
    two float32 implementations, and m carries that on.  note() records, after
    each PyTorch backward (and clip), which elements had 0 < |g| < TINY in some step;
    check() holds every other element to tol and those to a few Adam steps,
    and asserts they are rare (so the check keeps its teeth).
    """

    TINY = 1e-7                        # 10 eps; ~1e-6 of the largest gradients here

    def __init__(self, ref):   # a diffusers model (torch.nn.Module)
        self.params = dict(ref.named_parameters())
        self.tiny = {n: np.zeros(tuple(p.shape), bool) for n, p in self.params.items()}

    def note(self):
        for n, p in self.params.items():
            g = p.grad.detach().abs().numpy()
            self.tiny[n] |= (g > 0) & (g < self.TINY)     # exact zeros move neither

    def check(self, ours, lr, steps, tol=1e-4, what="params", ref=None):
        """ours (and ref, default PyTorch's parameters): name -> array."""
        worst = worst_tiny = 0.0
        total = n_tiny = 0
        for n, p in self.params.items():
            r = p.detach().numpy() if ref is None else np.asarray(ref[n])
            d = np.abs(ours[n] - r)
            t = self.tiny[n]
            worst = max(worst, float(d[~t].max(initial=0.0)))
            worst_tiny = max(worst_tiny, float(d[t].max(initial=0.0)))
            total += d.size
            n_tiny += int(t.sum())
        assert worst <= tol, f"{what} after {steps} steps differ by {worst:.3g}"
        assert worst_tiny <= 2 * lr * steps, f"{what}: rounding-level elements moved {worst_tiny:.3g}"
        assert n_tiny <= 0.01 * total, f"{n_tiny} of {total} gradients below {self.TINY}"
        return worst, n_tiny


def run_in_subprocess(code: str, timeout: float = 120.0, cwd: str | None = None,
                      env: dict | None = None):
    """Run ``code`` with ``sys.executable -c`` and return (returncode, stdout, stderr).

    A negative return code means the child died of a signal (-11 = SIGSEGV).
    """
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONFAULTHANDLER", "1")
    if env:
        full_env.update(env)
    # Ctrl-C as in a terminal or a notebook, however the suite was started: a job started
    # in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler, so the Ctrl-C tests would see nothing.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            + textwrap.dedent(code))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO, env=full_env)
    return proc.returncode, proc.stdout, proc.stderr


def assert_subprocess_ok(code: str, **kw) -> str:
    """Run code in a subprocess; fail (with its output) unless it exits 0. Returns stdout."""
    rc, out, err = run_in_subprocess(code, **kw)
    if rc < 0:
        pytest.fail(f"subprocess killed by signal {-rc} (crash)\nstdout:\n{out}\nstderr:\n{err}")
    assert rc == 0, f"subprocess exited with {rc}\nstdout:\n{out}\nstderr:\n{err}"
    return out


@pytest.fixture(autouse=True)
def _restore_num_threads():
    """Restore ddpm's thread count after every test (set_num_threads is process-global)."""
    before = ddpm.get_num_threads()
    yield
    if ddpm.get_num_threads() != before:
        ddpm.set_num_threads(before)


@pytest.fixture
def threads():
    """Call ``threads(n)`` inside a test to switch thread count (restored afterwards)."""
    return ddpm.set_num_threads


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, for test inputs (never for the code under test)."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def linear():
    return ddpm.NoiseSchedule("linear")


@pytest.fixture(scope="session")
def cosine():
    return ddpm.NoiseSchedule("cosine")


#: Folders of screenshots the browser test wrote (tests/test_browser.py), printed at the
#: end of the run so CI can keep them as artifacts.
SCREENSHOT_DIRS: list = []


def pytest_terminal_summary(terminalreporter):
    for d in SCREENSHOT_DIRS:
        terminalreporter.write_line(f"browser test screenshots: {d}")


@pytest.hookimpl(trylast=True)   # after -k / -m have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    """Each lesson notebook runs once per session: test_notebook_runs[X] (nbclient) is
    skipped when test_notebook_in_a_real_browser[X] is collected too and the browser
    stack is here to run it; that test fails on any cell's error output or a traceback
    on stderr, as the nbclient run does, and on more (widgets, console errors)."""
    in_browser = {item.callspec.params["name"] for item in items
                  if getattr(item, "originalname", "") == "test_notebook_in_a_real_browser"
                  and hasattr(item, "callspec")}
    if not in_browser:
        return
    import test_browser
    if not test_browser.stack_present():
        return
    skip = pytest.mark.skip(reason="run by test_browser.py in this session (Run All in "
                                   "JupyterLab, every output checked for errors)")
    for item in items:
        if (getattr(item, "originalname", "") == "test_notebook_runs"
                and hasattr(item, "callspec")
                and item.callspec.params["notebook"].name in in_browser):
            item.add_marker(skip)
