"""Cloud Storage helpers against a real fake-gcs-server."""

import pytest

from fer_pipeline import storage
from fer_pipeline.errors import FerError
from pipelines.gcs_emulator import GcsEmulator


@pytest.fixture()
def bucket(tmp_path):
    with GcsEmulator(tmp_path / "gcs"):
        storage.ensure_bucket("test-bucket")
        yield "gs://test-bucket"


def test_upload_dir_puts_the_named_file_last_and_download_restores_it(bucket, tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("manifest.json", "a.bin", "sub/b.bin"):
        (src / name).write_bytes(name.encode() * 100)
    order = []
    real_upload = storage.upload_file
    monkeypatch.setattr(storage, "upload_file", lambda local, uri: (order.append(uri), real_upload(local, uri)))
    assert storage.upload_dir(src, f"{bucket}/prefix", last=("manifest.json",)) == 3
    assert order[-1] == f"{bucket}/prefix/manifest.json"
    out = storage.download_dir(f"{bucket}/prefix", tmp_path / "out")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == {
        name: name.encode() * 100 for name in ("manifest.json", "a.bin", "sub/b.bin")
    }
    assert storage.exists(f"{bucket}/prefix/a.bin") and not storage.exists(f"{bucket}/prefix/zzz")


def test_missing_objects_give_an_error_naming_the_uri(bucket, tmp_path):
    with pytest.raises(FerError, match="gs://test-bucket/nothing"):
        storage.download_dir(f"{bucket}/nothing", tmp_path / "x")
    with pytest.raises(FerError, match="gs://test-bucket/none.json does not exist"):
        storage.download_file(f"{bucket}/none.json", tmp_path / "y.json")
    assert not (tmp_path / "y.json").exists()


def test_uri_parsing_and_fuse_mapping():
    assert storage.GcsPath.parse("gs://b/x/y/").child("z").uri == "gs://b/x/y/z"
    assert storage.fuse_path("gs://b/x/y") == "/gcs/b/x/y"
    with pytest.raises(FerError, match="expected gs://BUCKET/PATH"):
        storage.GcsPath.parse("/local/path")


def test_backbone_weights_from_gs_are_read_through_the_emulator_then_removed_or_refused_naming_the_parameter(
    bucket, tmp_path, monkeypatch
):
    import tempfile

    from fer_pipeline.errors import ConfigError
    from fer_pipeline.model import _local_copy

    source = tmp_path / "densenet.weights.h5"
    source.write_bytes(b"weights" * 10)
    storage.upload_file(source, f"{bucket}/w/densenet.weights.h5")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with _local_copy(f"{bucket}/w/densenet.weights.h5") as copy:  # tf.io.gfile would ignore the emulator
        assert copy.name == "densenet.weights.h5" and copy.read_bytes() == source.read_bytes()
        assert copy.parent.parent == scratch
    assert list(scratch.iterdir()) == []  # the 50 MB copy goes once the backbone has read it
    with pytest.raises(ConfigError, match="parameter `weights`"):
        with _local_copy(f"{bucket}/w/missing.weights.h5"):
            pass
    assert list(scratch.iterdir()) == []  # the refused copy left no directory behind
