"""Sweep spec: validation errors (file + field + what is allowed, nothing launched), resolution, trial ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from orch_helpers import ROOT, SWEEPS
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.expr import Expr, ExprError
from orchestrator.plan import SpecError, load_spec, parse_spec, resolve, trial_id_for

BAD = {
    "bad_unknown_field": ["max_concurent", "unknown field", "allowed:", "max_concurrent"],
    "bad_wrong_type": ["axes.n_layers[1]", "expected an integer", "'deep'"],
    "bad_empty_axis": ["axes.width", "empty list"],
    "bad_impossible": ["no trials left", "not divisible by n_heads 4"],
    "bad_missing_base": ["base.file", "not found", "no_such_base.yaml"],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_yaml_clear_error_and_nothing_launched(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = SWEEPS / f"{name}.yaml"
    with pytest.raises(SpecError) as e:
        resolve(path, count=False)
    msg = str(e.value)
    assert str(path) in msg
    for part in BAD[name]:
        assert part in msg, msg
    res = CliRunner().invoke(app, ["sweep", "submit", str(path)])
    assert res.exit_code == 2
    assert BAD[name][0] in res.output
    assert not (tmp_path / "runs").exists()  # no state, no MLflow store, no Ray


def _spec(tmp_path, **raw):
    raw.setdefault("name", "t")
    raw.setdefault("base", {"preset": "tiny"})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    "raw, parts",
    [
        ({"axes": {"bogus": [1]}}, ["axes.bogus", "unknown axis", "width", "section.field"]),
        ({"axes": {"model.hiden_channels": [1]}}, ["axes.model.hiden_channels", "hidden_channels"]),
        ({"axes": {"model.disc_width": [0.5, "wide"]}}, ["axes.model.disc_width[1]", "float"]),
        ({"axes": {"width": 64}}, ["axes.width", "list"]),
        ({"axes": {"steps": [10], "compute_budget": [1e12]}}, ["compute_budget or steps"]),
        ({"points": [{"width": 16}]}, ["points", "mode: list"]),
        ({"mode": "list"}, ["points", "non-empty"]),
        ({"axes": {"width": [16]}, "mode": "random"}, ["mode", "grid", "list"]),
        ({"axes": {"width": [16]}, "resources": {"gpu": 1.5}}, ["resources.gpu", "fractions"]),
        ({"axes": {"width": [16]}, "constraints": ["widht > 3"]}, ["constraints[0]", "unknown name widht"]),
        ({"axes": {"width": [16]}, "constraints": ["__import__('os')"]}, ["constraints[0]", "not allowed"]),
        (
            {"axes": {"width": [16]}, "base": {"preset": "tiny", "model": {"n_layerz": 2}}},
            ["base.model.n_layerz"],
        ),
        ({"axes": {"width": [16]}, "name": "bad name!"}, ["name"]),
        ({"axes": {"width": [16]}, "seeds": 0}, ["seeds"]),
    ],
)
def test_invalid_fields_name_the_path(tmp_path, raw, parts):
    with pytest.raises(SpecError) as e:
        resolve(_spec(tmp_path, **raw), count=False)
    for part in parts:
        assert part in str(e.value), str(e.value)


def test_grid_isoflop_seeds_constraints_and_skip_reasons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = resolve(SWEEPS / "grid_iso.yaml", count=False)
    # isoflop points: 2 budgets x 2 sizes = 4; x data_hours 3; x seeds 2 = 24 points
    assert len(plan.trials) + len(plan.skipped) == 24
    reasons = [s.reason for s in plan.skipped]
    assert sum("more than the corpus holds" in r for r in reasons) == 6  # data_hours 2.0 > 0.5 h
    assert sum("not divisible by n_heads 3" in r for r in reasons) == 6  # checked before data hours
    assert sum("constraint 'width * n_layers <= 150' is false" in r for r in reasons) == 4
    assert len(plan.trials) == 8
    for tp in plan.trials:
        m = tp.config.model
        assert m.hidden_channels == m.inter_channels == tp.axes["width"]
        assert m.filter_channels == 3 * m.hidden_channels  # filter_ratio: 3
        assert tp.config.train.compute_budget in (1e12, 4e12) and tp.config.train.steps is None
        assert tp.config.data.data_hours == tp.axes["data_hours"]
        assert tp.config.train.seed == tp.axes["seed"] in (0, 1)
        assert tp.config.sweep == "grid_iso" and tp.config.trial_id == tp.trial_id
        assert (
            Path(tp.config.output_dir) == tmp_path / "runs" / "sweeps" / "grid_iso" / "trials" / tp.trial_id
        )
        assert tp.config.tracking.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert len({tp.trial_id for tp in plan.trials}) == len(plan.trials)


def test_list_mode_width_mapping_dotted_and_extra_axes(tmp_path):
    p = _spec(
        tmp_path,
        mode="list",
        points=[
            {"width": {"hidden": 64, "inter": 48, "filter": 100}, "model.disc_width": 0.25},
            {"width": 32, "filter_ratio": 2.5, "extra.note": "x", "train.learning_rate": 1e-3},
        ],
        axes={"n_layers": [1, 3]},
        seeds=[7],
    )
    plan = resolve(p, count=False)
    assert len(plan.trials) == 4
    a = plan.trials[0].config
    assert (a.model.hidden_channels, a.model.inter_channels, a.model.filter_channels) == (64, 48, 100)
    assert a.model.disc_width == 0.25 and a.train.seed == 7
    b = plan.trials[2].config
    assert (b.model.hidden_channels, b.model.filter_channels, b.train.learning_rate) == (32, 80, 1e-3)
    assert plan.trials[2].axes["extra.note"] == "x"
    assert [tp.config.model.n_layers for tp in plan.trials] == [1, 3, 1, 3]


def test_trial_ids_are_stable(tmp_path):
    a = _spec(tmp_path, axes={"width": [16, 32], "compute_budget": ["1e12", 2.0e12]}, seeds=2)
    ids_a = {json.dumps(tp.axes, sort_keys=True): tp.trial_id for tp in resolve(a, count=False).trials}
    # same points in another order, other base settings, an extra axis value: same ids for the same points
    b = _spec(
        tmp_path,
        axes={"compute_budget": [2e12, 1e12, 4e12], "width": [32, 16]},
        seeds=[0, 1],
        base={"preset": "tiny", "train": {"learning_rate": 1e-3}},
    )
    ids_b = {json.dumps(tp.axes, sort_keys=True): tp.trial_id for tp in resolve(b, count=False).trials}
    assert len(ids_a) == 8 and len(ids_b) == 12
    for k, v in ids_a.items():
        assert ids_b[k] == v
    assert (
        trial_id_for({"width": 16}, 0) == trial_id_for({"width": 16.0}, 0) != trial_id_for({"width": 16}, 1)
    )


def test_budget_below_one_step_is_skipped(tmp_path):
    pytest.importorskip("torch")
    p = _spec(tmp_path, axes={"width": [16], "compute_budget": [1.0, 1e13]})
    plan = resolve(p)  # counts FLOPs per step with model.counting
    assert len(plan.trials) == 1 and plan.trials[0].steps and plan.trials[0].flops_per_step
    assert plan.trials[0].steps == int(1e13 // plan.trials[0].flops_per_step)
    assert "less than one training step" in plan.skipped[0].reason


def test_shipped_sweeps_are_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        plan = resolve(spec, count=False)
        assert plan.trials, path
    demo = resolve(ROOT / "sweeps" / "demo.yaml", count=False)
    assert len(demo.trials) >= 12
    assert {"size", "compute_budget", "branch"} <= set().union(*(tp.axes for tp in demo.trials))
    assert demo.trials[0].config.data.sampling_rate == 16000
    # the ladder's design as issue 18 asks it: >= 5 sizes, >= 4 budgets spanning >= 10x, seed repeats
    ladder = resolve(ROOT / "sweeps" / "cpu_ladder.yaml", count=False)
    cool = [tp for tp in ladder.trials if tp.axes.get("branch") == "cooldown"]
    sizes = {tp.axes["size"] for tp in cool}
    budgets = sorted({tp.axes["compute_budget"] for tp in cool})
    assert len(sizes) >= 5 and len(budgets) >= 4 and budgets[-1] / budgets[0] >= 10
    assert len({tp.seed for tp in cool}) >= 2


def test_dry_run_json_lists_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["sweep", "submit", str(SWEEPS / "tiny2.yaml"), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    rows = out["trials"]
    assert len(rows) == 2 and out["skipped"] == [] and out["flops"] is None  # no WSD branches
    for key in (
        "trial_id",
        "axes",
        "hidden_channels",
        "filter_channels",
        "params_generator",
        "flops_per_step",
        "steps",
    ):
        assert key in rows[0]
    assert rows[0]["steps"] == 6
    assert out["n_range"] is None  # not counted (estimate.count: false)
    assert not (tmp_path / "runs").exists()


def test_dry_run_note_once_per_distinct_note(tmp_path, monkeypatch):
    """A corpus that cannot be read is asked about once per quality level (three data pools): one note."""
    monkeypatch.chdir(tmp_path)
    p = _spec(
        tmp_path,
        base={"preset": "tiny", "data": {"corpus": "missing/esd.list", "corpus_format": "esd"}},
        axes={"data.min_quality": [None, "default", "dnsmos_ovrl >= p80"], "data_hours": [0.1]},
        estimate={"count": False},
    )
    plan = resolve(p, count=False)
    unknown = [n for n in plan.notes if n.startswith("corpus size unknown")]
    assert len(unknown) == 1 and "missing/esd.list" in unknown[0], plan.notes
    plan.notes.append(unknown[0])
    plan.notes += [unknown[0], "other"]
    assert plan.notes.count(unknown[0]) == 1 and plan.notes[-1] == "other"
    res = CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).count("corpus size unknown") == 1, res.output
    res = CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run", "--json"])
    assert sum(n.startswith("corpus size unknown") for n in json.loads(res.output)["notes"]) == 1


def test_dry_run_json_carries_the_table_totals(tmp_path, monkeypatch):
    """``--dry-run --json`` holds what the table prints: skipped points with reasons and the estimate totals."""
    monkeypatch.chdir(tmp_path)
    p = _spec(
        tmp_path,
        axes={"width": [16, 30], "n_heads": [2, 4]},  # 30 % 4 != 0: one point skipped, with its reason
        max_concurrent=2,
        estimate={"flops_per_s": 1e9},
        base={"preset": "tiny", "train": {"steps": 5}},
    )
    res = CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out["trials"]) == 3 and len(out["skipped"]) == 1
    assert "not divisible by n_heads 4" in out["skipped"][0]["reason"]
    assert out["skipped"][0]["axes"]["width"] == 30
    est = out["estimate"]
    secs = sum(r["est_seconds"] for r in out["trials"])
    assert est["trials"] == 3 and est["skipped"] == 1 and est["max_concurrent"] == 2
    assert est["trial_seconds"] == pytest.approx(secs) and secs > 0
    assert est["wall_seconds"] == pytest.approx(secs / 2)
    assert est["device"] == "cpu" and est["device_hours"] == pytest.approx(secs / 3600)
    assert est["total_flops"] == pytest.approx(sum(r["flops_per_step"] * 5 for r in out["trials"]))
    table = " ".join(CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run"]).output.split())
    assert re.search(r"skipped n_heads=4 width=30: hidden_channels 30 is not divisible", table), table
    assert "at 2 concurrent" in table
    assert f"{est['device_hours']:.3g} CPU-hours" in table


def test_expr():
    e = Expr("n_layers >= 12 and width % n_heads == 0, model.disc_width < 1")
    assert e.names == {"n_layers", "width", "n_heads", "model.disc_width"}
    assert e({"n_layers": 12, "width": 64, "n_heads": 4, "model.disc_width": 0.5})
    assert not e({"n_layers": 2, "width": 64, "n_heads": 4, "model.disc_width": 0.5})
    assert not Expr("x > 1")({"x": None})
    for bad in ("open('f')", "x.__class__()", "[1]", "lambda: 1", ""):
        with pytest.raises(ExprError):
            Expr(bad)


def test_parse_spec_from_mapping():
    spec = parse_spec({"name": "m", "axes": {"n_layers": [1]}, "base": {"preset": "tiny"}})
    assert spec.seed_list(42) == [42] and spec.max_failures == 1 and spec.resources.cpu == 1


def test_lr_axis_sets_learning_rate_and_refuses_non_positive(tmp_path):
    plan = resolve(_spec(tmp_path, axes={"lr": [1e-4, "3e-4"], "width": [16]}), count=False)
    assert [tp.config.train.learning_rate for tp in plan.trials] == [1e-4, 3e-4]
    assert [tp.axes["lr"] for tp in plan.trials] == [1e-4, 3e-4]
    assert plan.trials[0].name.startswith("lr=0.0001 ") and len({tp.trial_id for tp in plan.trials}) == 2
    for bad, path in (([1e-3, 0], "axes.lr[1]"), ([-1e-4], "axes.lr[0]"), (["fast"], "axes.lr[0]")):
        with pytest.raises(SpecError) as e:
            resolve(_spec(tmp_path, axes={"lr": bad}), count=False)
        assert str(tmp_path / "s.yaml") in str(e.value) and path in str(e.value), str(e.value)
        assert "expected a number > 0" in str(e.value)
    with pytest.raises(SpecError, match=r"axes.train.learning_rate\[0\]: expected a number > 0"):
        resolve(_spec(tmp_path, axes={"train.learning_rate": [-1e-3]}), count=False)
    with pytest.raises(SpecError, match="axes.train.learning_rate: the same field as the 'lr' axis"):
        resolve(_spec(tmp_path, axes={"lr": [1e-3], "train.learning_rate": [1e-3]}), count=False)


def test_size_axis_scales_text_decoder_and_discriminators_together(tmp_path):
    from model.config import tiny_config

    base = tiny_config().model  # hidden 32, filter 64, upsample 64, disc_width 1/16, 2 heads
    plan = resolve(
        _spec(tmp_path, axes={"size": [0.5, 1, 3.1]}, base={"preset": "tiny", "model": {"n_heads": 4}}),
        count=False,
    )
    got = [
        (m.hidden_channels, m.inter_channels, m.filter_channels, m.upsample_initial_channel, m.disc_width)
        for m in (tp.config.model for tp in plan.trials)
    ]
    assert got == [
        (16, 16, 32, 32, base.disc_width * 0.5),
        (32, 32, 64, 64, base.disc_width),
        (100, 100, 200, 198, base.disc_width * 3.1),  # 99.2 -> a multiple of 4 heads; 198.4 -> 198
    ]
    with pytest.raises(SpecError) as e:
        resolve(_spec(tmp_path, axes={"size": [1, 0.05]}), count=False)
    msg = str(e.value)
    assert "axes.size[1]" in msg and "model.upsample_initial_channel 3" in msg and "needs >= 8" in msg, msg
    for bad in ({"size": [0]}, {"size": [-1]}):
        with pytest.raises(SpecError, match=r"axes.size\[0\]: expected a number > 0"):
            resolve(_spec(tmp_path, axes=bad), count=False)
    with pytest.raises(SpecError, match="axes.size: .* cannot be combined with 'width'"):
        resolve(_spec(tmp_path, axes={"size": [1], "width": [16]}), count=False)
    with pytest.raises(SpecError, match="cannot be combined with 'model.disc_width'"):
        resolve(_spec(tmp_path, mode="list", points=[{"size": 1, "model.disc_width": 0.5}]), count=False)


def test_dry_run_shows_the_n_range_and_warns_below_4x(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from model.counting import parameter_counts
    from orchestrator.plan import param_range

    monkeypatch.chdir(tmp_path)
    narrow = resolve(_spec(tmp_path, axes={"width": [16, 32]}))
    counts = sorted(tp.params_generator for tp in narrow.trials)
    expect = [int(parameter_counts(tp.config)["generator"]["total"]) for tp in narrow.trials]
    assert counts == sorted(expect)  # the range is model.counting's count of each trial
    r = param_range(narrow)
    assert (r["min"], r["max"], r["sizes"]) == (counts[0], counts[1], 2)
    assert r["ratio"] == pytest.approx(counts[1] / counts[0]) and r["ratio"] < 4
    assert r["warning"].startswith(f"N spans {r['ratio']:.2g}x (") and "add sizes" in r["warning"]
    wide = param_range(resolve(_spec(tmp_path, axes={"size": [0.5, 1, 2]})))
    assert wide["ratio"] >= 4 and wide["warning"] is None and wide["sizes"] == 3
    p = _spec(tmp_path, axes={"width": [16, 32]}, estimate={"flops_per_s": 1e9})
    res = CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "N (generator parameters):" in res.output and f"N spans {r['ratio']:.2g}x" in res.output
    res = CliRunner().invoke(app, ["sweep", "submit", str(p), "--dry-run", "--json"])
    assert json.loads(res.output)["n_range"]["max"] == counts[1]
