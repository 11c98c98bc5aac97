"""Fuzz every file parser of ddpm (tests/fuzzing.py): no crash, no hang, no blow-up,
only ValueError/TypeError/OSError.

``DDPM_FUZZ_CASES`` cases per parser (default 400: a few thousand in all, about a
minute on two cores), each in a worker process under an address-space cap,
batched.  A longer run is one command::

    DDPM_FUZZ_CASES=10000 python -m pytest tests/test_fuzz.py
    python tests/fuzzing.py run --cases 10000 --jobs 2

``DDPM_FUZZ_SEED`` picks another set of cases (CI varies nothing: the same seed,
the same cases, so a red run replays with ``python tests/fuzzing.py repro``).
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzzing  # noqa: E402

CASES = int(os.environ.get("DDPM_FUZZ_CASES", "400"))
SEED = int(os.environ.get("DDPM_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def results():
    out = {r["parser"]: r for r in fuzzing.run_all(fuzzing.PARSERS, CASES, SEED, jobs=2)}
    print("\n" + fuzzing.report(list(out.values())))
    return out


@pytest.mark.parametrize("parser", fuzzing.PARSERS)
def test_fuzzed_files_raise_only_value_type_or_os_errors(results, parser):
    res = results[parser]
    assert res["cases"] == CASES, fuzzing.report([res])
    assert not res["findings"], fuzzing.report([res])
    # the mutations reach past the first check: some cases load, some fail in each way
    assert res["tally"].get("ok", 0) > 0 and len(res["tally"]) >= 2, res["tally"]
