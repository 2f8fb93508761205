"""The GPU check on a CPU: the time budget, the plans and their priors, the script's schedule and
the filing of a GPU run's results. Its runs in subprocesses: tests/e2e/test_gpu_check_runs.py."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from bench.gpu_check import PRESETS, TIME_BUDGET, TimeBudget, keep_results, main
from bench.records import read_records

from _helpers import REPO, repo_env


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_time_budget_starts_only_what_fits_and_learns_durations():
    clock = _Clock()
    budget = TimeBudget(deadline=1100.0, clock=clock)
    skipped = []
    started = []
    gate = budget.gate(["a1", "b1", "a2", "c1", "a3"], kind=lambda v: v[0],
                       expected_s=lambda v, last: {"a": 10.0, "b": 500.0, "c": 5.0}[v[0]] if last is None else last,
                       on_skip=lambda v, info: skipped.append((v, info)))
    for variant in gate:
        started.append(variant)
        clock.t += 40.0  # every variant that runs takes 40 s
    # a1 (10 s expected) runs; b1 (500 s, 60 s left) is skipped without stopping the rest; a2
    # now expects a1's 40 s and fits; c1 (5 s, 20 s left) fits; a3 (40 s, none left) does not.
    assert started == ["a1", "a2", "c1"]
    assert [v for v, _ in skipped] == ["b1", "a3"]
    assert skipped[0][1] == {"expected_s": 500.0, "left_s": 60.0}
    assert skipped[1][1] == {"expected_s": 40.0, "left_s": 0.0}
    assert budget.last_s == {"a": 40.0, "c": 40.0} and budget.current is None


def test_time_budget_defers_a_signal_while_a_record_is_written():
    budget = TimeBudget(None)
    with pytest.raises(BaseException) as info:
        with budget.hold():
            budget.on_signal(signal.SIGTERM, None)  # arrives mid-write: must not raise here
            written = True
    assert written and type(info.value).__name__ == "StepStopped"
    with pytest.raises(BaseException, match="SIGTERM"):
        budget.on_signal(signal.SIGTERM, None)  # outside a write: stops at once


def test_passed_deadline_records_every_variant_as_skipped(tmp_path):
    out = tmp_path / "out"
    rc = main(["train", "trn_bninception", str(out), "--device", "cpu", "--frames", "4", "--size", "64",
               "--deadline", str(time.time() - 1)])
    assert rc == 0
    recs = read_records(out)
    cpu_variants = [v for v in PRESETS["full"].train_variants
                    if v[0] != "fp16" and (len(v) < 3 or "cuda-graphs" not in v[2])]
    assert [(r["precision"], r["channels_last"], r["mode"]) for r in recs] == \
        [(*v[:2], v[2] if len(v) > 2 else "eager") for v in cpu_variants]
    assert all(r["status"] == "skipped" and r["reason"] == TIME_BUDGET and r["left_s"] == 0.0 for r in recs)
    assert all(r["device_type"] == "cpu" and r["date"] and r["model"] == "trn_bninception" for r in recs)


def test_infer_plans_cover_every_serving_mode_batch_1_first_aoti_last(tmp_path):
    from bench.gpu_plan import CostModel, Priors
    from bench.runner import inference_backends, split_backend

    full = PRESETS["full"].infer_plan
    modes = ("eager", "eager+cudagraph", "compile", "compile+cudagraph", "trt", "trt+cudagraph", "aoti",
             "aoti+cudagraph")
    assert {(b, n) for b in modes for n in (1, 16)} <= {(b, n) for b, p, n in full if p == "fp16"}
    # batch 1 first: the fp32 baseline (seconds), eager fp16, compiled + replayed, eager replayed
    assert full[:4] == (("eager", "fp32", 1), ("eager", "fp16", 1), ("compile+cudagraph", "fp16", 1),
                        ("eager+cudagraph", "fp16", 1))
    assert [n for _, _, n in full[4:8]] == [16] * 4
    assert {b for b, _, _ in full[-4:]} == {"aoti", "aoti+cudagraph"}  # one long build, last
    assert set(PRESETS["quick"].infer_plan) <= set(full)
    cost = CostModel(Priors.load())
    for preset in PRESETS.values():
        assert all(b in inference_backends() for b, _, _ in preset.infer_plan)
        for model in ("trn_bninception", "tpn_slowonly_r50"):  # every variant has its priors
            assert all(cost.infer(model, v, warmup=5, iters=30).seconds >= 0 for v in preset.infer_plan)
    # A passed deadline records the whole plan as skipped, each with its runner and mode.
    out = tmp_path / "out"
    assert main(["infer", "tpn_slowonly_r50", str(out), "--device", "cpu", "--deadline", str(time.time() - 1)]) == 0
    recs = read_records(out)
    assert [(r["backend"], r["precision"], r["batch"]) for r in recs] == list(full)
    assert all(r["status"] == "skipped" and (r["runner"], r["mode"]) == split_backend(r["backend"]) for r in recs)


# ---------------------------------------------------------------------------- the plan
def _plan(preset: str, **kw):
    from bench.gpu_check import build_schedule

    return build_schedule(preset, **kw)


def test_full_plan_on_a_cold_machine_measures_what_the_first_visit_needs():
    """Issue 24's bar: with the H200 priors and an empty Inductor cache, the full schedule runs
    both capture test files, TRN training eager and compiled+captured (bf16 channels-last), TPN
    training eager, TRN and TPN batch-1 eager fp16 and compile+CUDA-graph fp16, and the DALI
    and torch loader rows at steady state -- within the 7-minute budget."""
    plan = _plan("full")
    ran = plan.ran()
    tests = next(i for s in plan.slots if s.name == "tests_capture" for i in s.items)
    assert tests.status == "run" and "test_step_capture.py test_graphed.py" in tests.name
    for model in ("trn_bninception", "tpn_slowonly_r50"):
        for v in ("eager fp16 batch 1", "compile+cudagraph fp16 batch 1"):
            assert (f"infer_{model}", v) in ran, (model, v)
    assert {("train_trn_bninception", "bf16 channels_last eager"),
            ("train_trn_bninception", "bf16 channels_last compile+cuda-graphs"),
            ("train_tpn_slowonly_r50", "bf16 channels_last eager"),
            ("dali", "torch throughput"), ("dali", "dali throughput"), ("dali", "dali data_wait")} <= ran
    assert plan.budget_s <= 420 and plan.finish() <= 420
    # every slot's items start only when they end before the slot does (3 s kept for the step)
    for s in plan.slots:
        assert all(i.end <= s.end for i in s.items if i.status == "run"), s.name
    # the compiled variants carry their own cold compile; nothing borrowed from another kind
    compiled = plan.item("train_trn_bninception", "bf16 channels_last compile+cuda-graphs")
    assert "cold: Inductor compile 90" in compiled.detail and compiled.end - compiled.start >= 90
    # TensorRT is not on the lent machines: planned as skipped with the reason, costing nothing
    trt = plan.item("infer_trn_bninception", "trt fp16 batch 1")
    assert trt.status == "skip" and "torch_tensorrt" in trt.detail


def test_quick_plan_on_a_cold_machine_and_warm_rerun():
    plan = _plan("quick")
    ran = plan.ran()
    assert ("tests_capture", next(i.name for s in plan.slots if s.name == "tests_capture" for i in s.items)) in ran
    assert {("train_trn_bninception", "bf16 channels_last eager"),
            ("train_trn_bninception", "bf16 channels_last compile+cuda-graphs"),
            ("infer_trn_bninception", "eager fp16 batch 1"),
            ("infer_trn_bninception", "compile+cudagraph fp16 batch 1")} <= ran
    assert plan.finish() <= plan.budget_s <= 260
    warm = _plan("quick", warm_cache=True)
    assert warm.finish() < plan.finish() - 60  # a rerun on the same machine compiles from the cache
    assert len(warm.ran()) >= len(ran)
    # 15 minutes of device time: start (2 min), 2 DALI part transfers, the full check, this rerun
    assert 120 + 2 * 30 + 20 + _plan("full").budget_s + plan.budget_s <= 900


def test_each_variant_pays_its_own_cold_costs():
    from bench.gpu_plan import CostModel, Priors

    cost = CostModel(Priors.load())
    kw = dict(batch=24, warmup=2, iters=6)
    first = cost.train("trn_bninception", ("bf16", True, "eager"), **kw)
    assert "cold: cuDNN autotune" in first.parts
    cost.pay(first)
    graphs = cost.train("trn_bninception", ("bf16", True, "cuda-graphs"), **kw)
    assert "cold: cuDNN autotune" not in graphs.parts and "capture" in graphs.parts
    fp32 = cost.train("trn_bninception", ("fp32", False, "eager"), **kw)
    assert "cold: cuDNN autotune" in fp32.parts  # a new dtype/layout tunes again
    compiled = cost.train("trn_bninception", ("bf16", True, "compile+cuda-graphs"), **kw)
    assert compiled.parts["cold: Inductor compile"] == 90.0
    cost.pay(compiled)
    cost.new_process()  # the next slot: cuDNN tunes again, Inductor's cache on disk is warm
    again = cost.train("trn_bninception", ("bf16", True, "compile"), **kw)
    assert "cold: cuDNN autotune" in again.parts and again.parts["Inductor compile (cache warm)"] == 20.0
    # a rerun knows which graphs an earlier check compiled (kept in the Inductor cache folder)
    key = next(k for k in compiled.pays if k[0] == "inductor")
    rerun = CostModel(Priors.load(), warm_compiles=[key])
    assert "Inductor compile (cache warm)" in rerun.train("trn_bninception", ("bf16", True, "compile"), **kw).parts
    # an engine serves every batch once built
    aoti = cost.infer("trn_bninception", ("aoti", "fp16", 16), warmup=5, iters=30)
    cost.pay(aoti)
    assert aoti.seconds > 100 and cost.infer("trn_bninception", ("aoti+cudagraph", "fp16", 1),
                                             warmup=5, iters=30).seconds < 5


def test_compiled_graph_keys_are_remembered_in_the_cache_folder(tmp_path):
    from bench.gpu_plan import compiled_keys, remember_compiled

    key = ("inductor", "trn_bninception", "train", "bf16", True, 24)
    remember_compiled([key, ("cudnn", "x")], str(tmp_path))
    remember_compiled([key], str(tmp_path))
    assert compiled_keys(str(tmp_path)) == [key]
    assert compiled_keys(str(tmp_path / "none")) == []


def test_every_prior_says_where_it_comes_from():
    from bench.gpu_plan import Priors

    leaves = list(Priors.load().leaves())
    assert len(leaves) > 40
    for path, node in leaves:  # measured / derived from the 2026-11-30 files, or an estimate saying why
        assert re.match(r"(measured|derived|estimate|no measurement|the )", node.get("source", "")), path


def test_plan_command_and_script_print_the_schedule():
    rc_out = subprocess.run(["bash", "scripts/gpu_check.sh", "--plan", "--quick"], cwd=REPO,
                            env=dict(repo_env(), PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert rc_out.returncode == 0, rc_out.stderr
    text = rc_out.stdout
    assert "preset quick" in text and "compile+cuda-graphs" in text and "compile+cudagraph fp16 batch 1" in text
    assert "[0:" in text and "expected end" in text


def test_slots_feed_the_script():
    from bench.gpu_check import TEST_GROUPS, shell_slots, slot_parts

    out = subprocess.run(["bash", "-c", 'eval "$(cat)"; echo "${SLOTS[*]}"; echo "${TESTS_capture[*]}"'],
                         input=shell_slots("full"), capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == " ".join(f"{n}:{t}" for n, t in PRESETS["full"].slots)
    assert out[1] == "tests/unit/test_step_capture.py tests/unit/test_graphed.py -m gpu"
    for preset in PRESETS.values():
        names = [n for n, _ in preset.slots]
        assert names[0] == "tests_capture" and names[-1] == "report"
        assert all(slot_parts(n)[0] in ("tests", "dali", "train", "infer", "report") for n in names)
        assert all(n[len("tests_"):] in TEST_GROUPS for n in names if n.startswith("tests_"))
    full = [n for n, _ in PRESETS["full"].slots]
    assert full.index("tests_aoti") == len(full) - 2  # AOTInductor's cold build last


def test_loader_rows_are_at_steady_state():
    from bench.loader import LOADER_PARTS

    full = PRESETS["full"]
    assert full.loader_batches >= 40 and full.loader_videos >= (full.loader_batches + 8) * full.loader_batch
    assert full.loader_prefetch >= 3
    assert full.loader_plan[:3] == (("torch", "throughput"), ("dali", "throughput"), ("dali", "data_wait"))
    assert all(part in LOADER_PARTS for _, part in full.loader_plan)


def _gpu_records() -> list[dict]:
    base = {"device": "NVIDIA H200", "device_type": "cuda", "versions": {"torch": "2.11.0+cu130"},
            "model": "trn_bninception", "weights": "random (gpu_check): timings only"}
    return [dict(base, kind="inference", backend="eager", precision="fp32", batch=1, status="ok",
                 video_per_s=110.0, latency_ms={"p50": 9.0, "p90": 9.1, "p99": 9.2}, ratio_to_eager=1.0,
                 date="2026-12-01T10:00:00+00:00"),
            dict(base, kind="train", precision="fp32", channels_last=False, batch=24, status="ok",
                 videos_per_s=380.0, step_ms={"p50": 63.0, "mean": 63.0}, ratio_to_fp32=1.0,
                 date="2026-12-01T10:01:00+00:00")]


def test_keep_files_a_gpu_run_and_links_the_newest(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("intro\n<!-- newest-gpu-report -->No GPU report yet.<!-- /newest-gpu-report -->\nend\n")
    src = tmp_path / "files_at" / "out"
    src.mkdir(parents=True)
    (src / "results.json").write_text(json.dumps(_gpu_records()))
    (src / "gpu_check.log").write_text("log\n")
    (src / "gpu_tests.log").write_text("tests\n")
    (src / "report.md").write_text("as rendered on the GPU machine\n")
    for f in src.iterdir():
        f.chmod(0o444)  # as the device tool hands them over
    dest = keep_results(tmp_path / "files_at", repo)
    assert dest == repo / "reports" / "gpu" / "2026-12-01-nvidia-h200"
    assert {"results.json", "gpu_check.log", "gpu_tests.log", "report.md"} <= {p.name for p in dest.iterdir()}
    assert "| eager |" in (dest / "report.md").read_text()
    readme = (repo / "README.md").read_text()
    link = "[`reports/gpu/2026-12-01-nvidia-h200/report.md`](reports/gpu/2026-12-01-nvidia-h200/report.md)"
    assert link in readme and "No GPU report yet" not in readme and readme.endswith("end\n")
    # the same run again: a new folder, and an older run does not take the link
    assert keep_results(src, repo).name == "2026-12-01-nvidia-h200-2"
    older = [dict(r, date="2026-11-30T10:00:00+00:00") for r in _gpu_records()]
    (src / "results.json").chmod(0o644)
    (src / "results.json").write_text(json.dumps(older))
    assert keep_results(src, repo).name == "2026-11-30-nvidia-h200"
    assert "2026-12-01-nvidia-h200-2/report.md" in (repo / "README.md").read_text()


def test_keep_refuses_a_cpu_run(tmp_path):
    from fastvid.errors import FastvidError

    (tmp_path / "results.json").write_text(json.dumps([dict(_gpu_records()[0], device_type="cpu")]))
    with pytest.raises(FastvidError, match="no CUDA records"):
        keep_results(tmp_path, tmp_path)


def test_readme_and_docs_agree_with_the_script():
    """docs/gpu-check.md's slot table is the driver's (slots --table), its device-call timeouts
    cover the slots, and the README keeps make gpu-check with a pointer, not the lent-machine steps."""
    from bench.gpu_check import slot_table

    doc = (REPO / "docs" / "gpu-check.md").read_text()
    table = re.search(r"<!-- slot-table -->\n(.*?)\n<!-- /slot-table -->", doc, re.S).group(1)
    assert table == slot_table(), "regenerate with: python -m bench.gpu_check slots --table"
    full = sum(t for _, t in PRESETS["full"].slots)
    quick = sum(t for _, t in PRESETS["quick"].slots)
    timeouts = {int(m.group(1)): int(m.group(2)) for m in
                re.finditer(r"^\| (\d)(?: \(optional\))? \|.*\| (\d+) \|$", doc, re.M)}
    assert timeouts[3] >= full + 30 and timeouts[4] >= quick + 30, timeouts
    assert "scripts/gpu_check.sh $OUT --quick" in doc and "python -m bench.gpu_check keep FILES_AT" in doc
    assert f"{full // 60} minutes" in doc or f"{full // 60}-minute" in doc
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The GPU check"):readme.index("## Loaders")]
    assert "make gpu-check" in section and "docs/gpu-check.md" in section and "--plan" in section
    assert ".carry/dali-" not in readme and "unstage-dali" not in readme  # those steps live in the doc
    assert f"at most **{full // 60} minutes**" in section
    make = (REPO / "Makefile").read_text()
    assert f"({full // 60} min;" in make


def test_driver_estimates_grow_when_the_machine_is_slower_than_the_priors():
    from bench.gpu_check import TimeBudget, _Costs
    from bench.gpu_plan import CostModel, Priors

    clock = _Clock()
    budget = TimeBudget(deadline=2000.0, clock=clock)
    costs = _Costs(budget, CostModel(Priors.load()))
    kw = dict(batch=24, warmup=2, iters=6)
    variants = [("bf16", True, "eager"), ("bf16", True, "cuda-graphs"), ("fp32", False, "eager")]
    seen = []

    def expected(v, last):
        e = costs.expect(v, costs.model.train("trn_bninception", v, **kw))
        seen.append((v, e))
        return e

    for v in budget.gate(variants, kind=lambda v: v[2], expected_s=expected, on_skip=lambda v, i: None):
        clock.t += {"eager": 31.0, "cuda-graphs": 8.0}[v[2]]  # the first takes twice its ~16 s
    first, graphs, fp32 = (e for _, e in seen)
    assert 15 < first < 17 and graphs < 10  # cuDNN already tuned for bf16 channels-last
    fresh = CostModel(Priors.load()).train("trn_bninception", ("fp32", False, "eager"), **kw).seconds
    # stretched by the first variant's 31 s for ~16 expected, not by the short capture's 8 for ~4
    assert fp32 == pytest.approx(fresh * 31.0 / first, rel=1e-6)
