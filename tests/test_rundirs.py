"""Run directories: one run at a time (advisory lock, taken over from a dead holder), leftovers of a
killed writer removed, result files readable by others, cosmetic fields do not lock a config."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from stepwise import io
from stepwise.cli import runtime
from stepwise.cli.defaults import get_config


def _hold_lock(directory):
    code = ("import sys, time; from stepwise.io import lock_directory; lock_directory(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_workdir_is_refused_with_the_holder_and_taken_over_when_it_dies(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    proc = _hold_lock(wd)
    try:
        with pytest.raises(ValueError, match=f"in use by pid {proc.pid}"):
            runtime.make_workdir("sample", str(wd))
    finally:
        proc.kill()
        proc.wait()
    assert runtime.make_workdir("sample", str(wd)) == wd.resolve()   # the dead holder's lock is gone


def test_leftover_temporary_files_are_removed_and_results_get_normal_modes(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / f"{io.TMP_PREFIX}abc.npz.tmp").write_bytes(b"partial")
    (wd / "keep.json").write_text("{}")
    runtime.make_workdir("sample", str(wd))
    assert sorted(os.listdir(wd)) == sorted([io.LOCK_NAME, "keep.json"])
    path = io.write_json_atomic(wd / "metrics.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask


def test_workdir_that_is_a_file_is_a_named_error(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        runtime.make_workdir("sample", str(f))


def test_cosmetic_fields_do_not_count_but_result_fields_do(tmp_path):
    c = get_config()
    runtime.save_config(tmp_path, c)
    c.progress = not c.progress
    runtime.save_config(tmp_path, c)          # a cosmetic change resumes the same run
    c.nfe = c.nfe + 1
    runtime.save_config(tmp_path, c)          # a directory holding only its config (a run that stopped
    assert json.loads((tmp_path / "config.json").read_text())["nfe"] == c.nfe   # before any result) is replaced
    (tmp_path / "metrics.json").write_text("{}")   # once it holds a result, a different config is refused
    c.nfe = c.nfe + 1
    with pytest.raises(SystemExit, match=r"different config \(fields \['nfe'\]\)"):
        runtime.save_config(tmp_path, c)
    assert json.loads((tmp_path / "config.json").read_text())["nfe"] == c.nfe - 1
