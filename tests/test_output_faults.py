"""Output places that cannot take the files, and text files that cannot be decoded (issue 16, point 6): real faults
(a full tmpfs, a read-only bind mount, a folder without write permission), one line naming the path, exit 2, never
retried, no partial file."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from tests.support.folders import make_folder
from tests.support.processes import cli, one_error

JOB = "sampling: {steps: 1, target_h: 64, target_w: 64, seed: 1}\n"


@contextlib.contextmanager
def mounted(*args):
    """A real mount (root only); the test is skipped where mounting is not permitted."""
    target = Path(args[-1])
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount here ({r.stderr.strip()}): needs root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(disk: Path) -> None:
    """Fill a file system to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to fail again at close
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with contextlib.suppress(OSError), open(disk / "filler2", "wb", buffering=0) as f:
        while True:
            f.write(b"\0")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_full_disk_during_generation_is_one_line_and_not_retried(tmp_path):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", JOB)
    (tmp_path / "disk").mkdir()
    with mounted("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(tmp_path / "disk")) as disk:
        out = disk / "out"
        first = cli("run", folder, "--model", "tiny-random", "--out", out)
        assert first.returncode == 0, first.stderr[-3000:]
        (out / "output.mp4").unlink()
        fill(disk)
        r = cli("run", folder, "--model", "tiny-random", "--out", out, "--seed", "2")
        # the first file generation writes is named: the plan of the segments it keeps for a resume, written before
        # any denoising, so a full disk costs no GPU time; the failed run's own record cannot be written either, and
        # that must not hide the error that matters
        one_error(r, f"cannot write {out / '.scailflow' / 'segments'}/", "plan.json: no space left on the device")
        assert "generate: decode: " not in r.stdout + r.stderr  # nothing was generated, then thrown away
        assert "Retry" not in r.stdout + r.stderr
        assert not (out / "output.mp4").exists() and not list(out.rglob(".*.partial*"))
        os.unlink(disk / "filler")  # space again: the next run finishes from the cached stages
        again = cli("run", folder, "--model", "tiny-random", "--out", out, "--seed", "2")
        assert again.returncode == 0 and "pose Cached" in again.stdout, again.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_read_only_output_folder_is_one_line(tmp_path):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", JOB)
    out = tmp_path / "out"
    out.mkdir()
    with mounted("--bind", "-o", "ro", str(out), str(out)):
        if _writable(out):  # an older mount(8) binds read-write first
            subprocess.run(["mount", "-o", "remount,ro,bind", str(out)], check=True)
        r = cli("run", folder, "--model", "tiny-random", "--out", out)
        one_error(r, f"cannot write {out}", "read-only file system")
        assert "Retry" not in r.stdout + r.stderr
    assert list(out.iterdir()) == []


def _writable(d: Path) -> bool:
    try:
        (d / ".probe").touch()
    except OSError:
        return False
    (d / ".probe").unlink()
    return True


def _without_privilege() -> list[str]:
    """A command prefix that makes root obey file permissions (drops CAP_DAC_OVERRIDE), or nothing for a user."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a permission fault")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_output_folder_without_permission_is_one_line(tmp_path):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", JOB)
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        r = cli("run", folder, "--model", "tiny-random", "--out", out / "clip", prefix=_without_privilege())
    finally:
        out.chmod(0o755)
    one_error(r, f"cannot write {out / 'clip'}", "permission denied")
    assert list(out.iterdir()) == []


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_undecodable_prompt_txt_is_one_line_and_not_retried(tmp_path):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", JOB)
    (folder / "prompt.txt").write_bytes("Un caf\xe9 cr\xe8me, s'il vous pla\xeet.\n".encode("latin-1"))
    before = (folder / "prompt.txt").read_bytes()
    r = cli("run", folder, "--model", "tiny-random")
    one_error(r, str(folder / "prompt.txt"), "not UTF-8")
    assert "Retry" not in r.stdout + r.stderr and (folder / "prompt.txt").read_bytes() == before


def test_undecodable_prompt_file_in_the_stage_is_not_retried(tmp_path):
    from scailflow.errors import InputError
    from scailflow.prompts.stage import read_prompt_file
    from scailflow.tasks.common import heals

    p = tmp_path / "prompt.txt"
    p.write_bytes(b"\xff\xfe broken")
    with pytest.raises(InputError, match="prompt.txt: prompt file is not UTF-8") as info:
        read_prompt_file(p)
    assert not heals(info.value)
    assert not heals(OSError(errno.ENOSPC, "No space left on device"))
    assert not heals(OSError(errno.EROFS, "Read-only file system"))
    assert heals(OSError(errno.ECONNRESET, "Connection reset by peer"))
