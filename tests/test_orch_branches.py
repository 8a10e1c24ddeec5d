"""WSD cooldown-branch sweeps (issue 16, orchestration side): the plan of trunks and branches, what it refuses,
the FLOPs the dry run says it saves, the driver's phase order, the MLflow tags and the analysis table; and one
end-to-end run of the real trainer through the driver (about a minute)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from analysis import mlflow_contract as C
from orchestrator.cli import app
from orchestrator.driver import phase_groups
from orchestrator.plan import SpecError, branch_flops, resolve, trial_id_for

BUDGETS = [5.0e10, 1.2e11, 3.0e11]


def _raw(**over):
    raw = {
        "name": "br",
        "base": {"preset": "tiny", "train": {"lr_schedule": "wsd", "warmup_steps": 2, "cooldown_frac": 0.2}},
        "wsd_branches": True,
        "axes": {"width": [16, 32], "compute_budget": list(BUDGETS)},
        "estimate": {"flops_per_s": 1e9},
    }
    raw.update(over)
    return raw


def _spec(tmp_path, **over) -> str:
    p = tmp_path / "br.yaml"
    p.write_text(yaml.safe_dump(_raw(**over)))
    return p


def _kinds(plan):
    trunks = [tp for tp in plan.trials if tp.axes["branch"] == C.BRANCH_TRUNK]
    branches = [tp for tp in plan.trials if tp.axes["branch"] == C.BRANCH_COOLDOWN]
    return trunks, branches


def test_plan_has_a_trunk_per_point_and_a_branch_per_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = resolve(_spec(tmp_path, seeds=[0, 1]), count=False)
    trunks, branches = _kinds(plan)
    assert len(trunks) == 2 * 2 and len(branches) == 2 * 2 * 3
    assert len({tp.trial_id for tp in plan.trials}) == len(plan.trials)
    for t in trunks:
        tt = t.config.train
        assert set(t.axes) == {"branch", "width", "seed"} and "compute_budget" not in t.axes
        assert tt.branch_budgets == sorted(BUDGETS) and tt.compute_budget is None and tt.steps is None
        assert t.trial_id == trial_id_for({"branch": "trunk", "width": t.axes["width"]}, t.seed)
        assert (
            t.config.tracking.tags[C.TAG_BRANCH] == "trunk" and C.TAG_BRANCH_OF not in t.config.tracking.tags
        )
        assert t.name.startswith("trunk width=")
    by_trunk = {}
    for b in branches:
        bt = b.config.train
        trunk = next(t for t in trunks if (t.axes["width"], t.seed) == (b.axes["width"], b.seed))
        assert (
            bt.branch_from == f"sweep:br/{trunk.trial_id}" and bt.compute_budget == b.axes["compute_budget"]
        )
        assert b.config.tracking.tags[C.TAG_BRANCH_OF] == trunk.trial_id == b.branch_of
        assert b.config.tracking.tags[C.TAG_BRANCH] == "cooldown" and bt.steps is None
        assert b.config.model == trunk.config.model and bt.seed == trunk.config.train.seed
        by_trunk.setdefault(trunk.trial_id, []).append(bt.compute_budget)
    assert all(sorted(v) == sorted(BUDGETS) for v in by_trunk.values())
    # a branch is not the plain grid's trial of the same point (it trains differently)
    plain = resolve(_spec(tmp_path, wsd_branches=False), count=False)
    assert not {tp.trial_id for tp in plain.trials} & {tp.trial_id for tp in plan.trials}
    # stable: the same points in another order give the same ids
    again = resolve(
        _spec(tmp_path, seeds=[1, 0], axes={"compute_budget": BUDGETS[::-1], "width": [32, 16]}), count=False
    )
    assert {tp.trial_id for tp in again.trials} == {tp.trial_id for tp in plan.trials}
    # trunk first, then its branches: the order the table shows
    assert [tp.axes["branch"] for tp in plan.trials[:4]] == ["trunk", "cooldown", "cooldown", "cooldown"]


def test_constraints_and_skips_take_budgets_out_of_the_trunk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = resolve(_spec(tmp_path, constraints=["compute_budget < 2e11 or width == 32"]), count=False)
    trunks, branches = _kinds(plan)
    budgets = {t.axes["width"]: t.config.train.branch_budgets for t in trunks}
    assert budgets == {16: BUDGETS[:2], 32: BUDGETS}
    assert len(branches) == 5 and len(plan.skipped) == 1
    s = plan.skipped[0]
    assert s.axes["branch"] == "cooldown" and "constraint" in s.reason
    assert s.trial_id == trial_id_for({"width": 16, "compute_budget": 3e11, "branch": "cooldown"}, s.seed)
    # every budget of a point skipped: no trunk for it
    plan = resolve(_spec(tmp_path, constraints=["width == 32"]), count=False)
    assert [t.axes["width"] for t in _kinds(plan)[0]] == [32]


@pytest.mark.parametrize(
    "over, parts",
    [
        ({"axes": {"width": [16]}}, ["wsd_branches", "needs a compute_budget axis"]),
        ({"axes": {"width": [16], "steps": [10]}}, ["wsd_branches", "compute_budget"]),
        ({"base": {"preset": "tiny"}}, ["base.train.lr_schedule", "needs lr_schedule: wsd", "'cosine'"]),
        (
            {"base": {"preset": "tiny", "train": {"lr_schedule": "wsd", "warmup_frac": 0.1}}},
            ["base.train.warmup_frac", "warmup_steps"],
        ),
        (
            {"axes": {"compute_budget": [1e11], "train.lr_schedule": ["wsd", "cosine"]}},
            ["axes.train.lr_schedule", "cannot vary"],
        ),
    ],
)
def test_bad_branch_sweeps_are_refused_with_file_and_field(tmp_path, over, parts):
    p = _spec(tmp_path, **over)
    with pytest.raises(SpecError) as e:
        resolve(p, count=False)
    msg = str(e.value)
    assert str(p) in msg, msg
    for part in parts:
        assert part in msg, msg


def test_branches_with_stages_are_refused(tmp_path):
    raw = _raw()
    raw.pop("axes")
    raw["stages"] = {"finetune": {"axes": {"compute_budget": [1e11]}, "from": ["sweep:x/abc"]}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="wsd_branches: not supported together with stages"):
        resolve(p, count=False)


def test_counted_plan_branch_points_and_flops_saved(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from model.train.budget import steps_for_budget
    from model.train.schedule import decay_start

    monkeypatch.chdir(tmp_path)
    plan = resolve(_spec(tmp_path, axes={"width": [16, 32], "compute_budget": [1.0, *BUDGETS]}))
    trunks, branches = _kinds(plan)
    assert len(trunks) == 2 and len(branches) == 6
    assert sum("less than one training step" in s.reason for s in plan.skipped) == 2
    independent = shared = 0.0
    for t in trunks:
        mine = [b for b in branches if b.branch_of == t.trial_id]
        assert t.config.train.branch_budgets == BUDGETS  # the skipped 1-FLOP budget is not a branch point
        for b in mine:
            f = b.flops_per_step
            assert f == t.flops_per_step and b.steps == steps_for_budget(b.config.train.compute_budget, f)
            assert b.branch_step == decay_start(b.steps, 0.2) and 0 < b.branch_step < b.steps
            assert b.est_seconds == pytest.approx((b.steps - b.branch_step) * f / 1e9 + 20.0)
            independent += b.steps * f
            shared += (b.steps - b.branch_step) * f
        assert t.steps == max(b.branch_step for b in mine)
        assert t.est_seconds == pytest.approx(t.steps * t.flops_per_step / 1e9 + 20.0)
        shared += t.steps * t.flops_per_step
    fl = branch_flops(plan)
    assert fl["independent"] == pytest.approx(independent) and fl["with_branches"] == pytest.approx(shared)
    assert fl["saving"] == pytest.approx(1 - shared / independent) and 0 < fl["saving"] < 1
    print(
        f"2 sizes x 3 budgets: independent {independent:.3g}, branches {shared:.3g} FLOPs, saves {fl['saving']:.1%}"
    )

    res = CliRunner().invoke(app, ["sweep", "submit", str(tmp_path / "br.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "FLOPs: independent runs" in res.output and f"(saves {100 * fl['saving']:.0f}%)" in res.output
    res = CliRunner().invoke(app, ["sweep", "submit", str(tmp_path / "br.yaml"), "--dry-run", "--json"])
    out = json.loads(res.output)
    assert out["flops"]["independent"] == pytest.approx(independent)
    rows = {r["trial_id"]: r for r in out["trials"]}
    for b in branches:
        assert (
            rows[b.trial_id]["branch_step"] == b.branch_step and rows[b.trial_id]["branch_of"] == b.branch_of
        )
    assert "branch_step" not in rows[trunks[0].trial_id]
    assert not (tmp_path / "runs").exists()


def test_a_budget_of_one_step_has_no_branch_point_and_is_skipped(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    f = resolve(_spec(tmp_path, axes={"width": [16], "compute_budget": [1e12]})).trials[1].flops_per_step
    plan = resolve(_spec(tmp_path, axes={"width": [16], "compute_budget": [1.5 * f, 1e12]}))
    trunks, branches = _kinds(plan)
    assert len(branches) == 1 and trunks[0].config.train.branch_budgets == [1e12]
    assert any("branch point would be step 0" in s.reason for s in plan.skipped)


def test_driver_runs_trunks_before_branches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = resolve(_spec(tmp_path), count=False)
    trials = {tp.trial_id: tp.config.to_dict() for tp in reversed(plan.trials)}  # order must not matter
    groups = phase_groups(trials)
    assert [g[0] for g in groups] == [("branch", "trunk"), ("branch", "cooldown")]
    trunks, branches = _kinds(plan)
    assert set(groups[0][1]) == {t.trial_id for t in trunks}
    assert set(groups[1][1]) == {b.trial_id for b in branches}
    mixed = dict(trials)
    mixed["x"] = {"axes": {"stage": "pretrain"}}
    with pytest.raises(SpecError, match="mixed phases"):
        phase_groups(mixed)
    assert phase_groups({"a": {"axes": {"width": 16}}}) == [(None, ["a"])]


def test_a_branch_of_an_unfinished_trunk_is_not_trained(tmp_path, monkeypatch):
    from orchestrator.tracking import Tracker
    from orchestrator.trial import check_parent

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = resolve(_spec(tmp_path, tracking_uri=uri), count=False)
    trunk, branch = plan.trials[0], plan.trials[1]
    tr = Tracker(uri)
    rid = tr.trial_run("vits-scaling", "br", trunk.trial_id, status="running")
    trunk.config.tracking.run_id = rid
    trials = {tp.trial_id: tp.config.to_dict() for tp in plan.trials}
    tr.set_status(rid, "failed", "boom")
    with pytest.raises(RuntimeError) as e:
        check_parent(branch.config, trials)
    msg = str(e.value)
    assert f"cooldown trial {branch.trial_id} starts from trial {trunk.trial_id}" in msg
    assert "failed (not finished): not trained" in msg
    tr.set_status(rid, "finished")
    check_parent(branch.config, trials)  # a finished trunk: the branch may start
    check_parent(trunk.config, trials)  # a trunk has no parent


def test_a_cooldown_run_gets_the_branch_step_tag_a_trunk_does_not(tmp_path, monkeypatch):
    from orchestrator.tracking import MlflowSink, Tracker

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = resolve(_spec(tmp_path, tracking_uri=uri), count=False)
    tr = Tracker(uri)
    for tp, step in ((plan.trials[0], 17), (plan.trials[1], 17)):
        sink = MlflowSink.for_trial(tp.config, local_dir=tmp_path / tp.trial_id)
        sink.log_metrics({"branch_step": float(step), "loss_mel": 1.0}, step)
        sink.close()
        run = tr.client.get_run(sink.run_id)
        assert run.data.tags[C.TAG_BRANCH] == tp.axes["branch"]
        if tp.axes["branch"] == "cooldown":
            assert run.data.tags[C.TAG_BRANCH_STEP] == "17"
            assert run.data.tags[C.TAG_BRANCH_OF] == plan.trials[0].trial_id
        else:
            assert C.TAG_BRANCH_STEP not in run.data.tags


def test_analysis_table_leaves_trunks_out_and_carries_branch_columns(tmp_path):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from analysis import table as T

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("vits-scaling")
    runs = [("t", {C.TAG_BRANCH: "trunk"}), ("b1", {C.TAG_BRANCH: "cooldown", C.TAG_BRANCH_OF: "t"})]
    runs.append(("b2", {C.TAG_BRANCH: "cooldown", C.TAG_BRANCH_OF: "t", C.TAG_BRANCH_STEP: "40"}))
    for tid, tags in runs:
        r = c.create_run(exp, tags={C.TAG_SWEEP: "s", C.TAG_TRIAL: tid, C.TAG_STATUS: "finished", **tags})
        c.log_metric(r.info.run_id, "flops", 1e9)
        if tid == "b1":
            c.log_metric(r.info.run_id, "branch_step", 17.0, step=17)
    df = T.read_mlflow("s", uri)
    assert sorted(df["trial"]) == ["b1", "b2"] and set(df["branch"]) == {"cooldown"}
    by = df.set_index("trial")
    assert (by.loc["b1", "branch_step"], by.loc["b2", "branch_step"]) == (17, 40)
    assert (by["branch_of"] == "t").all()
    full = T.read_mlflow("s", uri, include_trunks=True)
    assert sorted(full["trial"]) == ["b1", "b2", "t"]
    p = tmp_path / "t.csv"
    full.to_csv(p, index=False)
    assert sorted(T.read_file(p)["trial"]) == ["b1", "b2"]
    assert len(T.read_file(p, include_trunks=True)) == 3
    plain = pd.DataFrame({"trial": ["a"], "N": [1.0]})
    assert T.drop_trunks(plain) is plain


@pytest.mark.integration
def test_branch_sweep_end_to_end_on_the_real_trainer(tmp_path):
    """1 size x 2 budgets through the driver on a local Ray: the trunk runs first, each branch starts from
    its branch point and ends with C = its planned steps x FLOPs per step (the trunk's stable part
    included), MLflow tags the branch step, and the analysis table holds the branches only."""
    from orch_helpers import cli

    from analysis.table import read_mlflow
    from model.train.schedule import decay_start
    from orchestrator.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = _raw(
        name="br_e2e",
        axes={"width": [16], "compute_budget": [1.2e10, 2.4e10]},
        storage_path=str(tmp_path / "sweeps"),
        tracking_uri=uri,
        resources={"cpu": 1},
        max_concurrent=2,
        max_failures=0,
        estimate={"count": False},
    )
    raw["base"]["data"] = {
        "builtin_hours": 0.015,
        "builtin_speakers": 2,
        "val_utterances": 3,
        "prepare_workers": 1,
        "corpus_dir": str(tmp_path / "corpus"),
        "cache_dir": str(tmp_path / "cache"),
    }
    raw["base"]["train"].update(log_interval=1)
    raw["base"]["eval"] = {"n_utterances": 0}
    f = tmp_path / "br_e2e.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    p = cli("sweep", "submit", str(f), "--json", "--quiet", cwd=tmp_path, timeout=1500)
    res = json.loads(p.stdout)
    assert sorted(r["status"] for r in res["trials"]) == ["finished"] * 3, res

    tr = Tracker(uri)
    runs = {
        r.data.tags[C.TAG_TRIAL]: r
        for r in tr.search(tr.experiment_id("vits-scaling"), {C.TAG_SWEEP: "br_e2e", C.TAG_ROLE: "trial"})
    }
    trunk = next(r for r in runs.values() if r.data.tags[C.TAG_BRANCH] == "trunk")
    branches = [r for r in runs.values() if r.data.tags[C.TAG_BRANCH] == "cooldown"]
    assert len(branches) == 2
    for b in branches:
        m = b.data.metrics
        fps, steps = m["flops_per_step"], int(m["steps"])
        s_b = decay_start(steps, 0.2)
        assert b.data.tags[C.TAG_BRANCH_OF] == trunk.data.tags[C.TAG_TRIAL]
        assert int(b.data.tags[C.TAG_BRANCH_STEP]) == s_b == int(m["branch_step"])
        assert m["flops"] == pytest.approx(steps * fps)  # the trunk's stable part + its own cooldown
        hist = tr.client.get_metric_history(b.info.run_id, "loss_mel")
        assert min(h.step for h in hist) > s_b  # it trained only its cooldown
        first = min(tr.client.get_metric_history(b.info.run_id, "flops"), key=lambda h: h.step)
        assert first.step > s_b and first.value == pytest.approx(first.step * fps)  # counters from the trunk
        # the branch phase after the trunk phase: its first training step after the trunk's run ended
        assert min(h.timestamp for h in hist) >= trunk.info.end_time
    table = read_mlflow("br_e2e", uri)
    assert sorted(table["branch"]) == ["cooldown", "cooldown"] and table["C"].notna().all()
