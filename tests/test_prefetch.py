"""The weights' read-ahead: reads every byte of the files that fit, in load order, once per process."""

from __future__ import annotations

import os

import pytest

from scailflow.scail import prefetch
from scailflow.scail.release_files import CLIP_FILES, T5_FILE, VAE_FILE, weight_files


def _files(tmp_path, sizes):
    paths = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"w{i}.bin"
        p.write_bytes(os.urandom(n))
        paths.append(p)
    return paths


def test_reads_every_byte_of_the_files(tmp_path):
    paths = _files(tmp_path, [3 * prefetch.CHUNK + 5, 17, 0])
    job = prefetch.Prefetch(paths)
    assert job.done.wait(30)
    assert job.bytes_read == sum(p.stat().st_size for p in paths)
    assert "GB read ahead in" in job.summary()


def test_only_the_leading_files_within_the_budget(tmp_path):
    paths = _files(tmp_path, [100, 200, 50])
    assert prefetch.files_that_fit(paths, 300) == paths[:2]
    assert prefetch.files_that_fit(paths, 99) == []  # the first file alone is over: nothing (the order is the load's)
    assert prefetch.files_that_fit(paths, None) == paths


def test_started_once_per_process_and_off_by_environment(tmp_path, monkeypatch):
    paths = _files(tmp_path, [1000, 2000])
    first = prefetch.start(paths)
    assert first is not None and prefetch.start(paths) is first
    assert first.done.wait(30) and first.bytes_read == 3000
    monkeypatch.setenv("SCAILFLOW_PREFETCH", "0")
    assert prefetch.start(_files(tmp_path / "..", [10])) is None


def test_a_file_that_vanishes_ends_the_read_quietly(tmp_path):
    paths = _files(tmp_path, [10])
    missing = tmp_path / "gone.bin"
    job = prefetch.Prefetch([missing, *paths])
    assert job.done.wait(30) and job.bytes_read == 0  # the load itself reports the missing file


@pytest.mark.parametrize("sub", ["", "umt5-xxl"])
def test_weight_files_in_load_order(tmp_path, sub):
    dit = tmp_path / "scail2.safetensors"
    dit.write_bytes(b"x")
    (tmp_path / "umt5-xxl").mkdir()
    for name in (VAE_FILE, CLIP_FILES[0]):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / sub / T5_FILE).write_bytes(b"x")
    got = weight_files(tmp_path, dit)
    assert [p.name for p in got] == [dit.name, VAE_FILE, T5_FILE, CLIP_FILES[0]]
    assert weight_files(tmp_path / "nowhere", tmp_path / "none.safetensors") == []


def test_a_run_reads_ahead_only_when_a_folder_still_needs_its_video(tmp_path):
    from scailflow.scail.options import ModelOptions
    from scailflow.tasks.gpu import read_weights_ahead

    release = tmp_path / "release"
    release.mkdir()
    for name in ("scail2.safetensors", VAE_FILE, T5_FILE, CLIP_FILES[0]):
        (release / name).write_bytes(os.urandom(1000))
    opts = ModelOptions(model="scail2", ckpt_dir=str(release), scail_path=str(release / "scail2.safetensors"))
    done, todo = tmp_path / "a" / "scailflow", tmp_path / "b" / "scailflow"
    for d in (done, todo):
        d.mkdir(parents=True)
    (done / "output.mp4").write_bytes(b"x")
    assert read_weights_ahead(opts, [done]) is None  # every video there: most likely served from the cache
    job = read_weights_ahead(opts, [done, todo])
    assert job is not None and job.done.wait(30) and job.bytes_read == 4000
    assert read_weights_ahead(ModelOptions(model="tiny-random"), [todo]) is None  # nothing to read
