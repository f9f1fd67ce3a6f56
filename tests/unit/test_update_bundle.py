"""Update bundles: what a box accepts (signed with its key, every part as the manifest says) and what it
refuses, with the message an operator reads. Real keys, real tar files, the build's own writer."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.update.bundle import (FORMAT, INITRD, KERNEL, MANIFEST, PARTS, ROOT, SIGNATURE, BundleError,
                                     parse_manifest, verify, write_bundle)

KEY = Ed25519PrivateKey.generate()
CONTENT = {KERNEL: b"kernel " * 100, INITRD: b"initrd " * 300, ROOT: b"squashfs " * 5000}


def parts_in(tmp_path, content=CONTENT) -> dict[str, str]:
    paths = {}
    for name, data in content.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return paths


def bundle_file(tmp_path, key=KEY, version="2.0.0", content=CONTENT) -> str:
    path = tmp_path / "edgecall.update"
    with open(path, "wb") as out:
        write_bundle(out, version, parts_in(tmp_path, content), key)
    return str(path)


def rewrite(path: str, change) -> None:
    """Rewrite the tar at `path` with `change(name, data)` giving each member's new bytes, or None to drop it."""
    with tarfile.open(path) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def test_a_signed_bundle_verifies_and_its_parts_read_back_whole(tmp_path):
    path = bundle_file(tmp_path)
    verified = verify(path, KEY.public_key())
    assert verified.manifest.version == "2.0.0"
    assert [p.name for p in verified.manifest.parts] == list(PARTS)
    for name, data in CONTENT.items():
        assert b"".join(verified.open_part(name)) == data
    with tarfile.open(path) as archive:  # a plain tar: `tar tvf` shows what is in it
        assert archive.getnames() == [MANIFEST, SIGNATURE, *PARTS]


def test_a_bundle_signed_with_another_key_is_refused(tmp_path):
    path = bundle_file(tmp_path, key=Ed25519PrivateKey.generate())
    with pytest.raises(BundleError, match="is not signed with this box's key: refusing it"):
        verify(path, KEY.public_key(), "this box's key")


def test_an_unsigned_bundle_is_refused(tmp_path):
    path = bundle_file(tmp_path)
    rewrite(path, lambda name, data: None if name == SIGNATURE else data)
    with pytest.raises(BundleError, match="has no manifest.sig: it is not signed"):
        verify(path, KEY.public_key())


def test_a_changed_part_is_refused_though_the_signature_is_good(tmp_path):
    path = bundle_file(tmp_path)
    rewrite(path, lambda name, data: data.replace(b"squashfs", b"squashFS", 1) if name == ROOT else data)
    with pytest.raises(BundleError, match="root.squashfs .* does not match the sha256 its manifest names"):
        verify(path, KEY.public_key())


def test_a_changed_manifest_breaks_the_signature(tmp_path):
    path = bundle_file(tmp_path)
    rewrite(path, lambda name, data: data.replace(b"2.0.0", b"9.0.0") if name == MANIFEST else data)
    with pytest.raises(BundleError, match="is not signed with"):
        verify(path, KEY.public_key())


def test_a_part_of_another_length_or_an_extra_member_is_refused(tmp_path):
    path = bundle_file(tmp_path)
    rewrite(path, lambda name, data: data + b"x" if name == KERNEL else data)
    with pytest.raises(BundleError, match="vmlinuz .* has 701 bytes, its manifest says 700"):
        verify(path, KEY.public_key())
    path = bundle_file(tmp_path)
    with tarfile.open(path, "a") as archive:
        archive.addfile(tarfile.TarInfo("extra"), io.BytesIO(b""))
    with pytest.raises(BundleError, match="holds 'extra', which no bundle has"):
        verify(path, KEY.public_key())


def test_a_file_changed_after_it_was_verified_is_caught_while_it_is_read(tmp_path):
    path = bundle_file(tmp_path)
    verified = verify(path, KEY.public_key())
    with open(path, "r+b") as f:
        f.seek(verified.offsets[ROOT] + 10)
        f.write(b"!")
    with pytest.raises(BundleError, match="changed since it was verified"):
        b"".join(verified.open_part(ROOT))


def test_what_is_not_a_bundle_is_refused_as_such(tmp_path):
    path = tmp_path / "not.update"
    path.write_bytes(b"\x7fELF" + bytes(4000))
    with pytest.raises(BundleError, match="not an update bundle"):
        verify(str(path), KEY.public_key())


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_are_refused_with_a_bundle_error_and_nothing_else(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "any.update"
    path.write_bytes(data)
    with pytest.raises(BundleError):
        verify(str(path), KEY.public_key())


def good_manifest() -> dict:
    return {"format": FORMAT, "version": "1.0.0",
            "parts": [{"name": name, "size": 1, "sha256": "0" * 64} for name in PARTS]}


def test_the_manifest_parser_takes_what_the_writer_writes():
    manifest = parse_manifest(json.dumps(good_manifest()).encode())
    assert manifest.version == "1.0.0" and manifest.part(ROOT).size == 1
    assert parse_manifest(manifest.to_bytes()) == manifest


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="edgecall-update/2"), "this box reads 'edgecall-update/1'"),
    (lambda m: m.update(version="1.0 beta"), "is not a version string"),
    (lambda m: m["parts"].pop(), "expected each of"),
    (lambda m: m["parts"].append(dict(m["parts"][0])), "expected each of"),
    (lambda m: m["parts"][0].update(size=-1), "is not a byte count"),
    (lambda m: m["parts"][0].update(size=True), "is not a byte count"),
    (lambda m: m["parts"][1].update(sha256="A" * 64), "64 lowercase hex digits"),
    (lambda m: m["parts"][2].update(name="../etc/shadow"), "unknown part"),
])
def test_a_manifest_out_of_shape_is_refused_saying_what(change, message):
    manifest = good_manifest()
    change(manifest)
    with pytest.raises(BundleError, match=message):
        parse_manifest(json.dumps(manifest).encode())


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)


@given(st.one_of(
    st.binary(max_size=500),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"format": st.just(FORMAT), "version": st.text(max_size=70),
                           "parts": st.lists(st.fixed_dictionaries({
                               "name": st.sampled_from([*PARTS, "x"]), "size": st.integers() | st.text(),
                               "sha256": st.text(alphabet="0123456789abcdefA", min_size=63, max_size=65)}),
                               max_size=4)}).map(lambda value: json.dumps(value).encode()),
))
def test_the_manifest_parser_raises_nothing_but_bundle_errors(data):
    try:
        manifest = parse_manifest(data)
    except BundleError:
        return
    assert sorted(p.name for p in manifest.parts) == sorted(PARTS)
