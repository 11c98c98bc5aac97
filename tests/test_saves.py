"""Files on disk (issue 14): killed saves leave no orphans for long, written files
respect the umask, a full disk leaves nothing behind and is an OSError.

Every file goes through ``ddpm._io.atomic_write``: a temporary file named after the
target and the writing process, renamed over the target when complete.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ddpm

from conftest import REPO, assert_subprocess_ok

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
posix = pytest.mark.skipif(os.name != "posix", reason="POSIX process and file semantics")

KILLED_SAVE = """
import os, signal, sys
import numpy as np, ddpm
TINY = {tiny!r}
d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
tr = ddpm.Trainer(d, np.zeros((4, 1, 8, 8), np.float32), batch_size=2, progress=False)
# the whole temporary file is written, then the process is killed before the rename
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
tr.save(sys.argv[1])
"""


@posix
def test_the_next_save_removes_the_temporary_files_of_killed_saves(tmp_path):
    path = tmp_path / "ck.safetensors"
    code = KILLED_SAVE.format(tiny=TINY)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, timeout=120,
                           capture_output=True)
        assert r.returncode == -9, r.stderr.decode()[-2000:]
    # each save removed the orphan of the one killed before it: one is left, not three
    orphans = [p.name for p in tmp_path.iterdir()]
    assert len(orphans) == 1 and not path.exists(), orphans
    # a temporary file of a live process (ours, and a sleeping child) is left alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = [tmp_path / f".ck.safetensors.{pid}-0000.ddpm-tmp"
                for pid in (os.getpid(), sleeper.pid)]
        for p in live:
            p.write_bytes(b"in progress")
        legacy_old = tmp_path / ".tmp-abcd1234ck.safetensors"      # ddpm 0.1.0's mkstemp name
        legacy_new = tmp_path / ".tmp-efgh5678ck.safetensors"
        for p in (legacy_old, legacy_new):
            p.write_bytes(b"x")
        os.utime(legacy_old, (time.time() - 7200,) * 2)
        d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
        ddpm.Trainer(d, np.zeros((4, 1, 8, 8), np.float32), batch_size=2,
                     progress=False).save(path)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["ck.safetensors", legacy_new.name] + [p.name for p in live]), left
    finally:
        sleeper.kill()
        sleeper.wait()


@posix
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    out = assert_subprocess_ok(f"""
        import os, stat
        import numpy as np, ddpm
        from ddpm.metrics import FeatureNet
        os.umask({umask})
        root = {str(tmp_path)!r}
        TINY = {TINY!r}
        d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
        d.save(os.path.join(root, "pipe"))
        ddpm.Trainer(d, np.zeros((4, 1, 8, 8), np.float32), batch_size=2,
                     progress=False).save(os.path.join(root, "ck.safetensors"))
        ddpm.save_grid(np.zeros((2, 1, 8, 8)), os.path.join(root, "grid.png"))
        FeatureNet(dict(widths=(8,), depth=(1,), groups=4)).save(os.path.join(root, "f.st"))
        for folder, _, files in os.walk(root):
            for f in files:
                print(oct(stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode)), f)
    """)
    lines = out.split("\n")
    modes = {line.split()[1]: int(line.split()[0], 8) for line in lines if line.strip()}
    assert len(modes) == 7, modes
    want = 0o666 & ~umask
    assert all(m == want for m in modes.values()), (oct(want), modes)


FULL_DISK = """
import os, resource, signal
import numpy as np, ddpm
from ddpm.metrics import FeatureNet
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # over the limit: EFBIG, an OSError
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a disk with 4 KiB left per file
root = {root!r}
TINY = {tiny!r}
d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
tr = ddpm.Trainer(d, np.zeros((4, 1, 8, 8), np.float32), batch_size=2, progress=False)
calls = {{
    "unet": lambda: d.model.save(os.path.join(root, "new", "unet")),
    "pipeline": lambda: d.save(os.path.join(root, "pipe")),
    "checkpoint": lambda: tr.save(os.path.join(root, "ckdir", "sub", "ck.safetensors")),
    "existing": lambda: tr.save(os.path.join(root, "old.safetensors")),
    "grid": lambda: ddpm.save_grid(np.random.default_rng(0).uniform(size=(64, 3, 32, 32)),
                                   os.path.join(root, "grids", "g.png")),
    "featurenet": lambda: FeatureNet().save(os.path.join(root, "f.safetensors")),
}}
for name, call in calls.items():
    try:
        call()
    except OSError as e:
        print(name, "OSError")
    except BaseException as e:
        print(name, type(e).__name__, e)
    else:
        print(name, "no error")
"""


@posix
def test_a_full_disk_is_an_oserror_and_leaves_nothing_behind(tmp_path):
    old = tmp_path / "old.safetensors"
    old.write_bytes(b"the previous checkpoint")
    out = assert_subprocess_ok(FULL_DISK.format(root=str(tmp_path), tiny=TINY))
    results = dict(line.split(" ", 1) for line in out.strip().split("\n"))
    assert all(v == "OSError" for v in results.values()), results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.safetensors"]
    assert old.read_bytes() == b"the previous checkpoint"


def test_new_dirs_keeps_folders_that_existed(tmp_path):
    from ddpm import _io
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        with _io.new_dirs(tmp_path / "a" / "b" / "c") as p:
            open(os.path.join(p, "f"), "w").close()
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path / "a")) == ["keep"]
    with _io.new_dirs(tmp_path / "a" / "b") as p:
        assert os.path.isdir(p)
    assert (tmp_path / "a" / "b").is_dir()


def test_atomic_write_creates_its_temporary_file_beside_the_target(tmp_path):
    from ddpm import _io
    seen = []

    def write(tmp):
        seen.append(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("new")

    _io.atomic_write(tmp_path / "f.txt", write)
    assert seen[0].startswith(f".f.txt.{os.getpid()}-") and seen[0].endswith(_io.TMP_SUFFIX)
    assert os.listdir(tmp_path) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "new"
