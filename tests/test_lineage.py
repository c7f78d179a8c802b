"""Content digests (`sent.lineage`): what a path holds, not where it is; what changes a digest and
what does not; the memo never serves a stale digest; the code version."""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import pytest

from sent.data_contract import MANIFEST
from sent.lineage import code_version, digest_of, path_digest


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_bytes(b'{"a": 1}')
    (d / "sub" / "weights.bin").write_bytes(b"\x00" * 100)
    return d


def test_a_file_digest_is_its_sha256(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"hello")
    assert path_digest(f) == sha256(b"hello")


def test_a_directory_digest_is_the_documented_hash_of_its_files(model_dir):
    # sorted relative paths, each with its size and the sha256 of its content (small files)
    expected = hashlib.sha256()
    for rel, data in (("config.json", b'{"a": 1}'), ("sub/weights.bin", b"\x00" * 100)):
        expected.update(f"{rel}\0{len(data)}\0{sha256(data)}\n".encode())
    assert path_digest(model_dir) == expected.hexdigest()


def test_a_copy_elsewhere_has_the_same_digest(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "copy")
    assert path_digest(copy) == path_digest(model_dir)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "config.json").write_bytes(b'{"a": 2}'),  # same size, other content
        lambda d: (d / "sub" / "weights.bin").rename(d / "sub" / "weights2.bin"),  # a renamed file
        lambda d: (d / "extra.txt").write_text(""),  # a new empty file
        lambda d: (d / "config.json").unlink(),
    ],
    ids=["content", "rename", "new-file", "removed-file"],
)
def test_any_change_of_content_or_layout_changes_a_directory_digest(model_dir, change):
    before = path_digest(model_dir)
    change(model_dir)
    assert path_digest(model_dir) != before


def test_the_memo_never_serves_a_stale_digest(tmp_path):
    # the same path rewritten in place: the memo is keyed on size and mtime too
    f = tmp_path / "x.bin"
    f.write_bytes(b"one")
    first = path_digest(f)
    f.write_bytes(b"three")
    assert path_digest(f) == sha256(b"three") != first


def test_large_files_are_fingerprinted_by_size_and_mtime_not_content(model_dir):
    weights = model_dir / "sub" / "weights.bin"
    small = path_digest(model_dir, full_hash_bytes=10)  # weights.bin (100 bytes) counts as large
    stat = weights.stat()
    weights.write_bytes(b"\x01" * 100)  # new content, same size ...
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same mtime
    assert path_digest(model_dir, full_hash_bytes=10) == small  # not read: the documented trade-off
    assert path_digest(model_dir) != small  # read in full under the default threshold
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path_digest(model_dir, full_hash_bytes=10) != small  # a rewrite moves the mtime


def test_a_curation_is_identified_by_its_manifest_alone(tmp_path):
    # the manifest lists every file's sha256, so the shards are not read again
    d = tmp_path / "curation"
    d.mkdir()
    (d / MANIFEST).write_text('{"files": []}')
    (d / "scores.parquet").write_bytes(b"x")
    assert path_digest(d) == sha256(b'{"files": []}')
    (d / "scores.parquet").write_bytes(b"y")
    assert path_digest(d) == sha256(b'{"files": []}')


def test_a_name_that_is_no_path_is_digested_as_a_name(tmp_path):
    assert path_digest("Qwen/Qwen2.5-7B") == "name:" + sha256(b"Qwen/Qwen2.5-7B")
    assert path_digest(tmp_path / "missing") == "name:" + sha256(str(tmp_path / "missing").encode())


def test_digest_of_depends_on_every_part_and_its_order():
    assert digest_of("a", 1) == sha256(b"a\x001")
    assert digest_of("a", 1) != digest_of(1, "a") != digest_of("a1")


def test_the_code_version_names_the_package_version_and_a_source_hash():
    from sent import __version__

    assert re.fullmatch(re.escape(__version__) + r"\+[0-9a-f]{12}", code_version())
