"""The benchmarks run (their --quick smoke, what `make bench-quick` runs) and their tables come back from their JSON:
`--from-json` prints exactly what the measuring run printed. The paired timing of benchmarks/_common.py
interleaves the variants in rotating order after one warm-up round."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    """benchmarks/NAME.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as for an imported module (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def common():
    return script("_common")


@pytest.fixture
def round_trip(tmp_path, monkeypatch, capsys):
    """Runs ``NAME --quick ARGS --json PATH`` (a real run, in a subprocess), checks that ``NAME --from-json PATH``
    prints the same (in this process: one torch import for all), returns the JSON."""
    def run(name: str, args: list[str]) -> dict:
        path = tmp_path / f"{name}.json"
        done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", *args, "--json", str(path)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, f"benchmarks/{name}.py --quick {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        result = json.loads(path.read_text())
        assert result["benchmark"] == name
        assert "| --- " in done.stdout  # a Markdown table
        monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: it imports its neighbours
        monkeypatch.setattr(sys, "argv", [f"{name}.py", "--from-json", str(path)])
        capsys.readouterr()
        script(name).main()
        assert capsys.readouterr().out == done.stdout
        return result
    return run


def test_compressors_are_timed_paired_against_tome(round_trip):
    result = round_trip("compressors", ["--names", "pooling,tome", "--dtypes", "float32"])
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"pooling", "tome"} and result["setup"]["baseline"] == "tome"
    assert rows["tome"]["ratio_to_baseline"] == 1.0  # tome against itself, repetition by repetition
    assert rows["pooling"]["tokens_out"] == rows["tome"]["tokens_out"] == 64  # quick: 4 frames × 16 per clip
    assert all(r["memory_method"] and r["extra_mib"] >= 0 for r in rows.values())
    assert {len(t) for t in result["seconds"].values()} == {3}  # --quick: 3 paired repetitions
    assert len(result["machine"]["load_average"]) == 2 and result["machine"]["threads"] >= 1


def test_tome_merge_round_trips(round_trip):
    result = round_trip("tome_merge", [])
    ratio = {r["variant"]: r["median_ratio_to_reference"] for r in result["rows"]}
    assert ratio["reference-bf16"] == 1.0 and set(ratio) == {"lrc-bf16", "reference-bf16", "lrc-fp32"}


def test_checkpoint_write_round_trips(round_trip, tmp_path):
    result = round_trip("checkpoint_write", ["--dir", str(tmp_path)])
    assert [r["size_mib"] for r in result["rows"]] == [2.0] and result["repeats"] == 2


def test_stage_parameters_round_trips(round_trip):
    result = round_trip("stage_parameters", [])
    parts = result["stages"]["1"]
    assert parts["llm"][0] == 0 and parts["projector"][0] == parts["projector"][1] > 0  # stage 1 trains the projector


@pytest.mark.slow
def test_llm_token_dropout_is_timed_paired_against_hf(round_trip):
    result = round_trip("llm_token_dropout", ["--frames", "8"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["hf"]["ratio_to_hf"] == 1.0
    assert rows["dropout"]["seq_out"] < rows["lrc"]["seq_out"] == rows["hf"]["seq_out"] == rows["hf"]["seq_in"]


@pytest.mark.slow
def test_generation_round_trips(round_trip, tmp_path):
    result = round_trip("generation", ["--corpus", str(tmp_path / "corpus")])
    assert result["same_tokens"] == {"plain": True}


def test_paired_runs_every_variant_once_per_round_in_rotating_order_after_a_warm_up():
    calls = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds, load = common().paired(variants, repeats=3)
    assert calls == list("abc" "abc" "bca" "cab")
    assert {len(s) for s in seconds.values()} == {3} and len(load) == 2


def test_median_ratio_pairs_repetitions():
    assert common().median_ratio([2.0, 30.0, 4.0], [1.0, 10.0, 4.0]) == 2.0  # ratios 2, 3, 1: noise cancels in pairs
    with pytest.raises(ValueError):
        common().median_ratio([1.0, 2.0], [1.0])


def test_from_json_refuses_another_benchmarks_file(tmp_path):
    c = common()
    c.write_json(tmp_path / "t.json", "tome_merge", {"rows": []})
    assert c.read_json(tmp_path / "t.json", "tome_merge")["rows"] == []
    with pytest.raises(SystemExit, match="tome_merge.py --from-json"):
        c.read_json(tmp_path / "t.json", "compressors")


def test_decoding_round_trips_and_checks_what_each_reader_returned(round_trip, tmp_path):
    result = round_trip("decoding", ["--seconds", "6", "--gop", "30", "--frames", "4", "--repeats", "1",
                                     "--variants", "lrc-exact,lrc-approx,pyav-seek,decode-all", "--cache", str(tmp_path)])
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["lrc-exact"]["check"] == rows["pyav-seek"]["check"] == "identical to decode-all"
    assert rows["lrc-approx"]["check"].endswith("distinct, in order")
    assert rows["pyav-seek"]["ratio_to_pyav-seek"] == rows["decode-all"]["ratio_to_decode-all"] == 1.0


def test_frames_under_memory_cap_round_trips(round_trip):
    result = round_trip("frames_under_memory_cap", ["--settings", "none,tome+dropout"])
    rows = {r["setting"]: r for r in result["rows"]}
    assert rows["none"]["big_ratio"] == rows["none"]["measured_ratio"] == 1.0
    assert rows["tome+dropout"]["measured"]["fits"] > rows["none"]["measured"]["fits"]
    # the MLP in pieces never fits fewer frames than the MLP run whole
    assert all(r["big"] >= r["big_mlp_whole"] for r in rows.values())


def test_packing_round_trips(round_trip):
    result = round_trip("packing", [])
    assert [r["mode"] for r in result["rows"]] == ["padding", "packing"] and result["packing_over_padding"] > 0
