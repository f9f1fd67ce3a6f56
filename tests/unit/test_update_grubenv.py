"""GRUB's environment block as GRUB's own grub-editenv writes and reads it."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.update import grubenv

EDITENV = shutil.which("grub-editenv")
needs_editenv = pytest.mark.skipif(EDITENV is None, reason="grub-editenv (Debian's grub-common) is not installed")


@needs_editenv
def test_a_block_grub_editenv_made_is_read_and_updated_in_place(tmp_path):
    path = str(tmp_path / "grubenv")
    subprocess.run([EDITENV, path, "create"], check=True)
    subprocess.run([EDITENV, path, "set", "edgecall_good=a", "other=x\\y"], check=True)
    assert grubenv.read(path) == {"edgecall_good": "a", "other": "x\\y"}
    inode = (tmp_path / "grubenv").stat().st_ino
    grubenv.update(path, {"edgecall_try": "b", "edgecall_good": "b"})
    listed = subprocess.run([EDITENV, path, "list"], check=True, capture_output=True, text=True).stdout
    assert listed.splitlines() == ["edgecall_good=b", "other=x\\y", "edgecall_try=b"]
    # In place: GRUB's save_env writes the sectors it found the file in.
    assert (tmp_path / "grubenv").stat().st_ino == inode and (tmp_path / "grubenv").stat().st_size == 1024


def test_what_does_not_fit_or_is_no_block_is_refused():
    with pytest.raises(grubenv.GrubEnvError, match="GRUB's block holds 1024"):
        grubenv.render({"x": "y" * 1000})
    with pytest.raises(grubenv.GrubEnvError, match="not a GRUB variable name"):
        grubenv.render({"a b": "c"})
    with pytest.raises(grubenv.GrubEnvError, match="not a GRUB environment block"):
        grubenv.parse(b"# GRUB Environment Block\n")


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


@given(st.dictionaries(NAMES, st.text(max_size=40), max_size=8))
def test_what_is_rendered_parses_back(variables):
    try:
        block = grubenv.render(variables)
    except grubenv.GrubEnvError:
        return  # too long for the block
    assert len(block) == grubenv.SIZE
    assert grubenv.parse(block) == variables


@given(st.binary(min_size=grubenv.SIZE - len(grubenv.HEADER), max_size=grubenv.SIZE - len(grubenv.HEADER)))
def test_any_block_parses_to_names_and_values_without_raising(rest):
    for name, value in grubenv.parse(grubenv.HEADER + rest).items():
        assert grubenv.NAME.fullmatch(name) and isinstance(value, str)
