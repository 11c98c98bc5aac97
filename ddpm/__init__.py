"""ddpm: denoising diffusion probabilistic models on a laptop CPU.

A C engine (schedules, counter-based RNG, forward noising, the U-Net's
forward and backward passes, optimizer, samplers) under a small Python API
whose names follow the course: ``NoiseSchedule``, ``q_sample``,
``alpha_bars``, ``posterior_variance``...

>>> import ddpm
>>> s = ddpm.NoiseSchedule("cosine")
>>> xt, eps = s.q_sample(ddpm.datasets.tshirt()[None], t=500, seed=0)
"""
import os as _os

# ddpm's threads wait passively between parallel loops unless you say otherwise.
# Spinning (OpenMP's default) is a little faster on an idle machine but, when
# other programs share the cores, a spinning thread holds a core that the
# thread everyone waits for needs: we measured 2-thread steps 10-40x slower on
# a busy 2-core machine, which passive waiting removes; idle, it cost nothing
# (training step 44.0 vs 41.2 img/s at 2 threads, passive vs active).  Read once, when
# the engine loads; set OMP_WAIT_POLICY=ACTIVE yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # load OpenBLAS (from the scipy-openblas32 wheel) before the engine links to it
    import scipy_openblas32 as _scipy_openblas32  # noqa: F401
except ImportError:  # pragma: no cover - only for DDPM_BLAS=system builds
    _scipy_openblas32 = None

from . import _core
from ._checks import as_int
from . import datasets
from .rng import new_seed, randn
from .schedule import KINDS, NoiseSchedule
from .model import UNet
from .diffusion import Diffusion
from . import sampling
from .pretrained import load_pretrained, pretrained_models, sample
from .training import Trainer
from . import visuals
from . import metrics
from .visuals import make_grid, save_animation, save_grid, show

from ._io import VERSION as __version__

__all__ = ["sample", "load_pretrained", "pretrained_models", "NoiseSchedule", "KINDS", "UNet", "Diffusion", "Trainer", "randn", "new_seed", "set_num_threads",
           "get_num_threads", "datasets", "save_grid", "save_animation", "show", "make_grid"]


def set_num_threads(n: int) -> None:
    """Use n threads for ddpm's engine, OpenBLAS included (never more than n in all).

    ddpm has one pool of threads; OpenBLAS runs single-threaded inside it, each
    matrix product cut into blocks of a size that depends only on its shape.
    So results do not depend on n: every parallel loop writes disjoint outputs
    and reduces in a fixed order.
    """
    _core.set_num_threads(as_int(n, "n", "set_num_threads", lo=1, hi=1024))


def get_num_threads() -> int:
    """Number of threads ddpm uses (default: the machine's cores, or $OMP_NUM_THREADS)."""
    return _core.get_num_threads()


def __getattr__(name):  # ddpm.widgets is imported on first use: it needs the notebooks extra
    if name == "widgets":
        import importlib
        return importlib.import_module(".widgets", __name__)
    raise AttributeError(f"module 'ddpm' has no attribute {name!r}")
