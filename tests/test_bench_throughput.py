"""bench.throughput's arithmetic and its older-CPU emulation (the benchmark itself is run by hand)."""

from __future__ import annotations

import os

import pytest

from bench import throughput
from fer_pipeline import precision


def test_cached_phase_rate_is_one_backbone_pass_per_view_plus_the_heads_epochs():
    # 20 epochs, 1 view: 1/100 s of backbone once and 20/10,000 s of head per image
    assert throughput.phase_rate(100.0, 10_000.0, epochs=20, views=1) == pytest.approx(20 / (0.01 + 0.002))
    # a view per epoch and a free head: the backbone's rate, as without the cache
    assert throughput.phase_rate(100.0, 1e15, epochs=20, views=20) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("isa", "kept"),
    [
        ("AVX512_CORE_VNNI", {"avx2", "avx512f", "avx512_vnni"}),
        ("AVX512_CORE", {"avx2", "avx512f"}),
        ("AVX2", {"avx2"}),
    ],
)
def test_an_isa_cap_hides_the_flags_above_it_from_auto(monkeypatch, isa, kept):
    flags = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    throughput.emulate_cpu_isa(isa)  # monkeypatch restores cpu_flags and the variable afterwards
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == isa
    assert precision.cpu_flags() == kept
    assert precision.choose_policy("auto", cpu_flags=precision.cpu_flags())[0] == "float32"


def test_every_benchmark_section_names_the_decisive_cpu_flags(monkeypatch):
    from bench._common import cpu_flags_line

    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}))
    line = cpu_flags_line()
    assert line.startswith("CPU flags: avx2 fma avx512f avx512_bf16; absent: avx512_vnni amx_tile amx_bf16")
