"""Build of ddpm's C engine, the extension ddpm._core.

OpenBLAS comes from the scipy-openblas32 wheel by default (a build requirement,
pinned in pyproject.toml; its symbols carry the ``scipy_`` prefix).  Set
``DDPM_BLAS=system`` to build against a system OpenBLAS found by pkg-config
instead (``apt-get install libopenblas-dev pkg-config``).  ``DDPM_OPENMP=0``
builds without OpenMP (same numbers, one thread for ddpm's own loops).
The C files compile in parallel, one per usable core (``DDPM_BUILD_JOBS=N`` to
choose); the extension is the same bytes either way.  Where GCC takes them,
``-mmove-max=256 -mstore-max=256`` (see WIDE_MOVES) make its 8-float copies one
32-byte move instead of two halves.
"""
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from glob import glob

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def blas_config():
    """include_dirs, library_dirs, libraries, macros, link_args for OpenBLAS."""
    mode = os.environ.get("DDPM_BLAS", "wheel").lower()
    if mode == "system":
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags", "openblas"], text=True)
            libs = subprocess.check_output(["pkg-config", "--libs", "openblas"], text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit("DDPM_BLAS=system: pkg-config could not find openblas "
                     f"(install libopenblas-dev and pkg-config): {exc}")
        inc = [f[2:] for f in shlex.split(cflags) if f.startswith("-I")]
        libdirs = [f[2:] for f in shlex.split(libs) if f.startswith("-L")]
        libnames = [f[2:] for f in shlex.split(libs) if f.startswith("-l")]
        return inc, libdirs, libnames, [], []
    if mode != "wheel":
        sys.exit(f"DDPM_BLAS must be 'wheel' or 'system', got {mode!r}")
    import scipy_openblas32 as sob

    # rpath: the wheel's lib dir beside ours in site-packages for a normal
    # install; ddpm/__init__ also imports scipy_openblas32 first, which loads
    # the library globally, so editable installs work too.
    rpath = "-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib"
    return ([sob.get_include_dir()], [sob.get_lib_dir()], [sob.get_library()],
            [("BLAS_SYMBOL_PREFIX", "scipy_")], [rpath])


def has_openmp(compiler):
    if os.environ.get("DDPM_OPENMP", "1") == "0":
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


def accepts(compiler, flags):
    """Whether the compiler takes these flags (a warning counts as no)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "flags.c")
        with open(src, "w") as f:
            f.write("int main(void){return 0;}\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=flags + ["-Werror"])
        except Exception:
            return False
    return True


# GCC's generic tuning copies a 32-byte memcpy (how the vector code loads and
# stores 8 floats at any alignment, DDPM_LOAD8) as two 16-byte halves, even in
# the AVX2 clones; these let it use one 32-byte move.  Only the moves change,
# never the arithmetic: the same bits.  The U-Net's forward (32 images, 1
# thread, the two builds alternated in one process, median of 30 paired CPU
# times, on an AMD EPYC) took 0.961-0.979 times as long in four runs.  GCC 12+
# on x86-64; other compilers skip them.
WIDE_MOVES = ["-mmove-max=256", "-mstore-max=256"]


def build_jobs():
    """How many C files compile at once: DDPM_BUILD_JOBS, else one per usable core."""
    jobs = os.environ.get("DDPM_BUILD_JOBS", "")
    if jobs:
        if not jobs.isdigit() or int(jobs) < 1:
            sys.exit(f"DDPM_BUILD_JOBS must be a positive integer, got {jobs!r}")
        return int(jobs)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                          # not Linux
        return os.cpu_count() or 1


def compile_in_parallel(compiler, jobs):
    """Make compiler.compile() run up to `jobs` compiler processes at once, one per source
    (setuptools compiles one extension's files one after another)."""
    serial = compiler.compile

    def compile(sources, *args, **kwargs):
        if jobs < 2 or len(sources) < 2:
            return serial(sources, *args, **kwargs)
        with ThreadPoolExecutor(jobs) as pool:
            parts = list(pool.map(lambda src: serial([src], *args, **kwargs), sources))
        return [obj for part in parts for obj in part]

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        compile_in_parallel(self.compiler, build_jobs())
        omp = has_openmp(self.compiler)
        wide = accepts(self.compiler, WIDE_MOVES)
        for ext in self.extensions:
            if omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            if wide:
                ext.extra_compile_args.extend(WIDE_MOVES)
        super().build_extensions()


inc, libdirs, libs, macros, link_args = blas_config()
sources = sorted(glob(os.path.join("csrc", "*", "*.c")))

ext = Extension(
    "ddpm._core",
    sources=sources,
    include_dirs=["csrc", numpy.get_include()] + inc,
    library_dirs=libdirs,
    libraries=libs + ["m"],
    define_macros=macros,
    depends=sorted(glob(os.path.join("csrc", "*", "*.h"))),   # a header change rebuilds
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-fno-math-errno", "-fno-trapping-math",
                        "-fvisibility=hidden"],
    extra_link_args=link_args,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
