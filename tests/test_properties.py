"""Property tests (hypothesis): generated inputs to the readers and loaders may be refused,
with the project's own error, but never crash with anything else. Example counts are
kept small so that `make test` stays fast; a failure prints the smallest input found."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fer_pipeline import runs
from fer_pipeline.errors import ConfigError, FerError
from fer_pipeline.ingest import IngestOptions, read_source
from fer_pipeline.registry import LocalRegistry, RegistryError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Documents close to the real shapes, so that the deeper fields are reached too.
registry_like = st.fixed_dictionaries(
    {
        "format_version": st.just(1) | json_values,
        "models": st.dictionaries(
            st.text(min_size=1, max_size=6),
            st.fixed_dictionaries(
                {
                    "versions": st.lists(
                        st.dictionaries(
                            st.sampled_from(["version", "path", "metrics", "labels", "description", "primary_metric"]),
                            json_values,
                        ),
                        max_size=3,
                    ),
                    "aliases": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
                    "default_version": json_values,
                }
            ),
            max_size=2,
        )
        | json_values,
    }
)
run_index_like = st.fixed_dictionaries(
    {
        "format_version": st.just(1) | json_values,
        "runs": st.lists(
            st.dictionaries(
                st.sampled_from(["run_id", "kind", "params", "metrics", "started", "duration_s"]),
                json_values,
                max_size=6,
            )
            | json_values,
            max_size=4,
        )
        | json_values,
    }
)


@FAST
@given(document=registry_like | json_values)
def test_registry_index_loader_refuses_or_reads(document):
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "index.json").write_text(json.dumps(document))
        registry = LocalRegistry(Path(tmp))
        try:
            versions = registry.list()
            for version in versions:
                registry.resolve(f"{version.name}@{version.version}")
                registry.champion(version.name)
        except RegistryError:
            pass


@FAST
@given(document=run_index_like | json_values)
def test_run_index_loader_refuses_or_reads(document):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "runs.json")
        path.write_text(json.dumps(document))
        try:
            records = runs.RunIndex(path).records()
        except runs.RunIndexError:
            return
        if records:
            runs.compare_table(records)


csv_rows = st.lists(
    st.tuples(
        st.sampled_from(["0", "3", "6", "7", "-1", "x", ""]),
        st.sampled_from(["0 " * 2303 + "0", "1 2 3", "abc", "", "255 " * 2304, "256 " * 2304]),
        st.sampled_from(["Training", "PublicTest", "PrivateTest", "Validation", ""]),
    ),
    max_size=12,
)


@FAST
@given(
    rows=csv_rows, header=st.sampled_from(["emotion,pixels,Usage", "pixels,emotion,Usage", "emotion,pixels", "a,b,c"])
)
def test_csv_reader_refuses_or_reads(rows, header):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fer2013.csv")
        path.write_text(header + "\n" + "\n".join(",".join(row) for row in rows) + "\n")
        try:
            read_source(path, IngestOptions(strict=False))
        except FerError:
            pass


entry_names = st.sampled_from(
    ["train/happy/", "test/sad/", "train/", "test/", "", "__MACOSX/", "train/happy/x/", "other/"]
).flatmap(
    lambda folder: st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"), min_size=1, max_size=8
    ).map(lambda name: folder + name)
)
entry_bytes = st.sampled_from([b"", b"not an image", b"\xff\xd8\xff\xe0garbage", bytes(20000)]) | st.binary(max_size=64)


@FAST
@given(entries=st.lists(st.tuples(entry_names, entry_bytes), max_size=10, unique_by=lambda e: e[0]))
def test_zip_reader_refuses_or_reads(entries):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fer.zip")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                archive.writestr(name, data)
        path.write_bytes(buffer.getvalue())
        try:
            read_source(path, IngestOptions(strict=False, max_compression_ratio=50))
        except FerError:
            pass


@FAST
@given(
    convert=st.booleans(),
    policy=st.text(max_size=6) | st.sampled_from(["keep", "drop", "fail"]),
    size=st.integers(-3, 10**9),
    ratio=st.floats(allow_nan=False, allow_infinity=False, min_value=-5, max_value=1e6),
)
def test_ingest_options_refuse_or_build(convert, policy, size, ratio):
    try:
        IngestOptions(convert=convert, duplicate_policy=policy, max_member_bytes=size, max_compression_ratio=ratio)
    except ConfigError:
        pass


@FAST
@given(entries=st.lists(st.tuples(entry_names, entry_bytes), max_size=8, unique_by=lambda e: e[0]))
@example(entries=[("train/.", b"")])  # a file named train where the split folder belongs (found by a draw)
def test_folder_reader_refuses_or_reads(entries):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "tree")
        root.mkdir()
        for name, data in entries:
            path = root / name
            try:
                if name.endswith("/"):
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
            except (FileExistsError, NotADirectoryError, IsADirectoryError, OSError):
                continue  # a name that clashes with an earlier file or folder: not made
        try:
            read_source(root, IngestOptions(strict=False))
        except FerError:
            pass
