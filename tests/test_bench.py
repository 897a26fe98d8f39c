"""The benchmark: `python -m lib_todo.bench --quick` on CPU, every CLI error path, the estimator, the plot,
the model registry, and the attention kernels and configurations."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lib_todo import bench
from lib_todo.bench import measure, registry, report
from lib_todo.bench.variants import BASELINE, Config

REPO = Path(__file__).resolve().parent.parent
PROG = "python -m lib_todo.bench"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, "-m", "lib_todo.bench", "--quick", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), out, done.stdout


def test_quick_json_shape(quick_run):
    data, out, stdout = quick_run
    assert data["device"] and data["device_type"] == "cpu" and data["clock"] == "cpu-time"
    assert {"python", "torch", "diffusers"} <= set(data["versions"])
    assert data["versions"]["torch"] == torch.__version__
    assert data["args"]["quick"] is True and data["args"]["warmup"] == 1 and data["timestamp"]
    rows = data["rows"]
    assert rows and all(set(measure.ROW_FIELDS) <= set(r) for r in rows)
    assert not [r for r in rows if r["error"] or r["skipped"]]
    assert {"baseline", "bound", "auto", "f2", "f2+l2", "tome"} <= {r["config"] for r in rows}
    assert out.with_suffix(".png").stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["bench.json", "bench.png"]  # no temporary file left
    assert stdout.startswith("| model | kernel | size | config |")


def test_quick_times_and_speedups_agree(quick_run):
    """One estimator: ms = baseline median / speed-up, speed-up = median of the round ratios."""
    for r in quick_run[0]["rows"]:
        assert r["rounds"] >= 3 and len(r["round_ms"]) == r["rounds"] and r["peak_mb"] is None
        if r["config"] == "baseline":
            assert r["speedup"] == 1.0 and r["rel_change"] == 0.0
            assert r["ms"] == pytest.approx(statistics.median(r["round_ms"]), rel=1e-3)
            continue
        assert r["ms"] * r["speedup"] == pytest.approx(r["base_ms"])
        assert r["ratio_low"] <= r["speedup"] <= r["ratio_high"]
        assert 0.0 < r["rel_change"] < 1.0 or r["applied"] == "1x/1x"
        if r["config"] == "f2":
            assert r["applied"] == "2x/1x" and r["ideal_ms"] > 0 and r["share_of_ideal"] > 0
        if r["config"] == "f2+l2":
            assert r["applied"] == "2x/2x" and r["ideal_ms"] is None


def test_quick_todo_is_faster_at_the_largest_size(quick_run):
    rows = quick_run[0]["rows"]
    largest = max(r["width_px"] * r["height_px"] for r in rows)
    todo = [r for r in rows if r["width_px"] * r["height_px"] == largest and r["config"] in ("f2", "f2+l2")]
    assert len(todo) == 2
    for r in todo:
        assert r["speedup"] > 1.0, r


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any model fails the test: the CLI error paths must refuse before anything is built."""

    def refuse(*args, **kwargs):
        pytest.fail("a model was built although the options were bad")

    monkeypatch.setattr(registry, "build", refuse)


def _refused(capsys: pytest.CaptureFixture, argv: list[str], flag: str, value: str) -> str:
    """Run main(argv): exit 2, one line on stderr naming the flag, the value and what is accepted."""
    assert bench.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{PROG}: error: {flag}: got {value!r}") and "; accepted: " in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "flag", "value", "accepted"),
    [
        (["--factors", "99"], "--factors", "99", "from 1 to 8"),
        (["--factors", "0"], "--factors", "0", "from 1 to 8"),
        (["--factors", "2,x"], "--factors", "x", "from 1 to 8"),
        (["--factors", ","], "--factors", ",", "non-empty"),
        (["--device", "mps"], "--device", "mps", "auto, cpu, cuda"),
        (["--device", "tpu"], "--device", "tpu", "auto, cpu, cuda"),
        (["--device", "cuda:x"], "--device", "cuda:x", "auto, cpu, cuda"),
        (["--repeats", "0"], "--repeats", "0", "at least 1"),
        (["--repeats", "2.5"], "--repeats", "2.5", "at least 1"),
        (["--warmup", "-1"], "--warmup", "-1", "at least 0"),
        (["--width", "0"], "--width", "0", "multiple of 32"),
        (["--width", "48"], "--width", "48", "multiple of 32"),
        (["--threads", "0"], "--threads", "0", "from 1 to"),
        (["--threads", "100000"], "--threads", "100000", "from 1 to"),
        (["--budget-s", "-1"], "--budget-s", "-1", "positive"),
        (["--budget-s", "inf"], "--budget-s", "inf", "positive"),
        (["--sizes", "1001"], "--sizes", "1001", "multiples of 8"),
        (["--sizes", "0"], "--sizes", "0", "multiples of 8"),
        (["--sizes", "512x512x8"], "--sizes", "512x512x8", "multiples of 8"),
        (["--models", "sd15,sd99"], "--models", "sd99", "sd15, sdxl"),
        (["--kernels", "flash"], "--kernels", "flash", "sdpa, chunked"),
        (["--configs", "fast"], "--configs", "fast", "bound, auto"),
        (["--out", "results.txt"], "--out", "results.txt", "ending in .json"),
    ],
)
def test_bad_option_is_one_line_before_anything_is_built(capsys, no_build, argv, flag, value, accepted):
    assert accepted in _refused(capsys, argv, flag, value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible, so --device cuda is accepted")
def test_cuda_without_a_gpu_is_refused(capsys, no_build):
    assert "accepted: auto, cpu" in _refused(capsys, ["--device", "cuda"], "--device", "cuda")


def test_unwritable_out_is_refused_before_measuring(capsys, no_build, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = str(blocker / "bench.json")
    assert "not writable" in _refused(capsys, ["--out", target], "--out", target)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert "a folder" in _refused(capsys, ["--out", str(folder)], "--out", str(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder.json"]  # no probe file left


def test_replot_needs_a_readable_results_file(capsys, no_build, tmp_path):
    missing = str(tmp_path / "missing.json")
    assert "no such file" in _refused(capsys, ["--replot", missing], "--replot", missing)
    not_json = tmp_path / "notes.json"
    not_json.write_text("hello")
    assert "not JSON" in _refused(capsys, ["--replot", str(not_json)], "--replot", str(not_json))
    no_rows = tmp_path / "other.json"
    no_rows.write_text('{"a": 1}')
    assert "no list of rows" in _refused(capsys, ["--replot", str(no_rows)], "--replot", str(no_rows))


def test_unknown_flag_is_one_line(capsys, no_build):
    assert bench.main(["--fast"]) == 2
    err = capsys.readouterr().err
    assert err == f"{PROG}: error: unrecognized arguments: --fast (see --help)\n"


def test_bad_option_from_the_shell_has_no_traceback():
    cmd = [sys.executable, "-m", "lib_todo.bench", "--factors", "99"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{PROG}: error: --factors: got '99'; accepted: comma list of numbers from 1 to 8 (auto has its own row)"
    ]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for profile, values in bench.options.PROFILES.items():
        assert f"{profile} {values['sizes']}" in text
    assert "(default: cuda 2,3,4; cpu 2,4; quick 2)" in text
    assert "(default: bench_out/bench.json)" in text and "(default: 1)" in text


def test_a_new_model_family_is_one_entry(capsys, monkeypatch, tmp_path):
    """An entry whose package is missing is accepted by --models and listed with the reason, not dropped."""
    entry = registry.ModelEntry("fake", "a family that needs a package", registry.build, (("no_such_pkg", "pip x"),))
    monkeypatch.setitem(registry.MODELS, "fake", entry)
    out = tmp_path / "r.json"
    argv = ["--models", "fake", "--sizes", "64,128", "--kernels", "sdpa,chunked", "--out", str(out)]
    assert bench.main(argv) == 1  # nothing could be measured
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == f"{PROG}: error: nothing could be measured (see the table for why)"
    rows = json.loads(out.read_text())["rows"]
    assert [(r["kernel"], r["size"]) for r in rows] == [
        ("sdpa", "64x64"),
        ("sdpa", "128x128"),
        ("chunked", "64x64"),
        ("chunked", "128x128"),
    ]
    assert all(r["config"] == "all" and r["skipped"] == "needs no_such_pkg (pip x)" for r in rows)
    assert "skipped: needs no_such_pkg (pip x)" in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no plot of nothing, no temporary file


def test_missing_ldm_lists_its_rows(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ldm", None)  # as if stable-diffusion-sdkit were not installed
    out = tmp_path / "r.json"
    assert bench.main(["--models", "ldm-sd15", "--sizes", "64", "--out", str(out)]) == 1
    (row,) = json.loads(out.read_text())["rows"]
    assert row["skipped"] == f"needs ldm ({registry.LDM_INSTALL})"


@pytest.fixture(scope="module")
def small_sd15() -> bench.model.UnetModel:
    torch.set_num_threads(1)
    return bench.load_model("sd15", 32, torch.device("cpu"))


def test_rows_that_cannot_run_are_listed_with_the_reason(monkeypatch, small_sd15):
    configs = bench.make_configs([2.0], {"f", "tome"})
    monkeypatch.setitem(sys.modules, "tomesd", None)  # as if tomesd were not installed
    series = measure.measure_cell(small_sd15, configs, (128, 128), repeats=1, warmup=0, budget_s=60)
    rows = measure.make_rows("sd15", "sdpa", (128, 128), series)
    assert [r["config"] for r in rows] == ["baseline", "f2", "tome"]
    tome = rows[2]
    assert tome["skipped"] == "tomesd not installed (pip install tomesd)" and tome["speedup"] is None
    assert rows[1]["speedup"] > 0 and rows[1]["skipped"] is None
    assert "skipped: tomesd not installed" in report.markdown_table(rows)


class _FailsAfterFirstCall:
    """The real small model, except that configuration `f2` fails (as out of memory) after its first call."""

    def __init__(self, model) -> None:
        self._model, self._calls = model, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def configured(self, config):
        if config.name == "f2":
            self._calls += 1
            if self._calls > 1:
                raise RuntimeError("out of memory")
        return self._model.configured(config)


def test_a_configuration_failing_in_a_later_round_is_listed_and_the_others_go_on(small_sd15):
    configs = bench.make_configs([2.0], {"bound", "f"})
    series = measure.measure_cell(_FailsAfterFirstCall(small_sd15), configs, (128, 128), 2, 1, 60)
    base, bound, f2 = measure.make_rows("sd15", "sdpa", (128, 128), series)
    assert f2["error"] == "RuntimeError in a later round: out of memory" and f2["speedup"] is None
    assert bound["rounds"] == base["rounds"] == 2 and bound["speedup"] > 1.0
    assert "failed: RuntimeError in a later round" in report.markdown_table([base, bound, f2])


def test_one_estimator_for_times_ratios_and_ideal():
    bound, f2 = Config("bound", "bound"), Config("f2", "todo", has_ideal=True)
    series = [
        measure.Series(BASELINE, ms=[100.0, 130.0, 90.0]),
        measure.Series(bound, ms=[50.0, 50.0, 60.0], ratios=[2.0, 2.6, 1.5]),
        measure.Series(f2, ms=[80.0, 80.0, 60.0], ratios=[1.25, 1.625, 1.5], level1_factor=2.0),
    ]
    base, bnd, f2_row = measure.make_rows("m", "sdpa", (512, 512), series)
    assert base["ms"] == 100.0 and base["speedup"] == 1.0
    assert bnd["speedup"] == 2.0 and bnd["ms"] == 50.0 and (bnd["ratio_low"], bnd["ratio_high"]) == (1.5, 2.6)
    assert f2_row["speedup"] == 1.5 and f2_row["ms"] == pytest.approx(100.0 / 1.5)
    ideal = 100.0 - (1 - 1 / 4) * (100.0 - 50.0)  # the bound's time is the baseline over its speed-up
    assert f2_row["ideal_ms"] == pytest.approx(ideal)
    assert f2_row["share_of_ideal"] == pytest.approx(ideal / (100.0 / 1.5))


def _rows_at(sizes: list[str]) -> list[dict]:
    rows = []
    for i, size in enumerate(sizes):
        w, h = bench.parse_size(size)
        for config, speedup in (("baseline", 1.0), ("bound", 2.0 + i), ("f2", 1.5 + i)):
            rows.append({"model": "m", "kernel": "sdpa", "size": f"{w}x{h}", "width_px": w, "height_px": h,
                         "config": config, "speedup": speedup})  # fmt: skip
    return rows


@pytest.mark.parametrize("sizes", [["512"], ["512", "1024"], ["512", "1000x744", "1024"]])
def test_plot_shows_the_bound_at_any_number_of_sizes(sizes, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    report.plot_panel(ax, _rows_at(sizes))
    lines = {line.get_label(): line for line in ax.get_lines()}
    bound = lines["bound (L1 self-attn free)"]
    assert bound.get_marker() not in (None, "None", "", " ") and len(bound.get_xdata()) == len(sizes)
    assert list(bound.get_ydata()) == [2.0 + i for i in range(len(sizes))]
    assert lines["f2"].get_marker() == "o"
    plt.close(fig)
    png = tmp_path / "p.png"
    report.plot(_rows_at(sizes), png, "title")
    assert png.stat().st_size > 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.json"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        report._replace_atomically(target, fail)
    assert list(tmp_path.iterdir()) == []
    report.write_json(target, {"device": "x"}, [])
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_replot_redraws_a_committed_result(capsys, tmp_path):
    copy = tmp_path / "bench.json"
    copy.write_text((REPO / "results" / "cpu" / "bench.json").read_text())
    assert bench.main(["--replot", str(copy)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| model |") and table.count("| sd15 |") == len(json.loads(copy.read_text())["rows"])
    assert copy.with_suffix(".png").stat().st_size > 1000


def test_chunked_attention_matches_sdpa():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 50, 8, generator=gen)
    k, v = torch.randn(2, 3, 20, 8, generator=gen), torch.randn(2, 3, 20, 8, generator=gen)
    ref = F.scaled_dot_product_attention(q, k, v)
    small = bench.chunked_attention(q, k, v, limit=2 * 3 * 20 * 4 * 7)  # 7 query rows per chunk
    torch.testing.assert_close(small, ref)
    torch.testing.assert_close(bench.chunked_attention(q, k, v), ref)


@pytest.mark.parametrize("name", ["sd15", "ldm-sd15"])
def test_kernels_agree_and_configs_restore(name):
    torch.set_num_threads(1)
    model = bench.load_model(name, 32, torch.device("cpu"))
    assert len(model.level1) == 5
    args, kwargs = model.inputs(128, 128)
    with model.context():
        base = model.call(args, kwargs)
        with model.kernel("chunked"):
            chunked = model.call(args, kwargs)
            for config in bench.make_configs([2.0], {"bound", "f", "f+l2", "tome"}):
                assert model.cannot_run(config) is None
                with model.configured(config):
                    assert bench.rel_change(model.call(args, kwargs), base) > 1e-4
        again = model.call(args, kwargs)
    assert bench.rel_change(chunked, base) < 1e-5
    assert torch.equal(again, base)


@pytest.mark.parametrize("width", [32, 64])
def test_ldm_sdxl_builds_at_test_widths(width):
    model = bench.load_model("ldm-sdxl", width, torch.device("cpu"))
    assert len(model.level1) == 5  # SDXL's first attention level is /2, one block per level here
    with model.context():
        out = model.call(*model.inputs(128, 128))
    assert out.shape == (2, 4, 16, 16) and not math.isnan(float(out.float().sum()))


def test_parse_size():
    assert bench.parse_size("512") == (512, 512)
    assert bench.parse_size("1000x744") == (1000, 744)
    with pytest.raises(bench.OptionError, match="multiples of 8"):
        bench.parse_size("1001")
