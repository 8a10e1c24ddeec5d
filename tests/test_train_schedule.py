"""Learning-rate schedules (model/train/schedule.py), their config rules, and WSD trunk / branch training.

The trainer tests share one small built-in corpus (as test_train_loop.py) and check the branch contract
the strongest way there is on CPU: a branch started from its trunk's checkpoint ends with exactly the
weights, lr curve, FLOPs and audio seen of an independent WSD trial of the same budget.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from test_train_loop import checkpoint_weights, crash_after, prepared_config

from model.config import ConfigError, TrialConfig, load_config, tiny_config
from model.counting import flops_per_step
from model.sink import MemorySink
from model.step import build_train_state
from model.train import plan_budget, run_trial
from model.train.checkpoint import CheckpointMismatch, is_kept, list_checkpoints, load_checkpoint
from model.train.data import TrialData
from model.train.schedule import SchedulePlan, decay_start, lr_factor, plan_schedule

# ----------------------------------------------------------------------------------------------------
# the curves


def _plan(kind: str, total: int = 100, batches_per_epoch: int = 7, **kw) -> SchedulePlan:
    t = tiny_config().train
    t.lr_schedule = kind
    for k, v in kw.items():
        setattr(t, k, v)
    return plan_schedule(t, total, batches_per_epoch=batches_per_epoch)


def test_decay_start_is_the_first_cooldown_step():
    assert decay_start(100, 0.2) == 80
    assert decay_start(10, 0.25) == 7  # round(2.5) = 3 cooldown steps (half up)
    assert decay_start(12, 0.25) == 9
    assert decay_start(1, 0.2) == 0  # at least one cooldown step
    assert decay_start(3, 0.99) == 0  # never before step 0


def test_cosine_edges():
    p = _plan("cosine", 100, warmup_steps=10, min_lr_frac=0.1)
    assert lr_factor(0, p) == pytest.approx(0.1)  # the first update: 1/W of the peak
    assert lr_factor(9, p) == 1.0  # the last warm-up update is at the peak
    assert lr_factor(10, p) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 90)))
    assert lr_factor(54, p) == pytest.approx(0.55)  # half way through the decay
    assert lr_factor(99, p) == pytest.approx(0.1)  # the planned last update is at the floor
    assert lr_factor(150, p) == pytest.approx(0.1)  # and it stays there
    frac = _plan("cosine", 200, warmup_frac=0.05)  # a fraction of the plan: 10 steps
    assert frac.warmup_steps == 10 and lr_factor(9, frac) == 1.0
    no_warmup = _plan("cosine", 4, min_lr_frac=0.0)
    assert [lr_factor(s, no_warmup) for s in range(4)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)]
    )


@pytest.mark.parametrize(
    ("shape", "mid"), [("linear", 0.1 + 0.9 * 0.5), ("1-sqrt", 0.1 + 0.9 * (1 - math.sqrt(0.5)))]
)
def test_wsd_edges(shape, mid):
    p = _plan("wsd", 100, warmup_steps=5, cooldown_frac=0.2, cooldown_shape=shape, min_lr_frac=0.1)
    assert lr_factor(0, p) == pytest.approx(0.2)
    assert lr_factor(4, p) == 1.0  # end of warm-up
    assert lr_factor(79, p) == 1.0  # the last constant update
    first = 1 - 1 / 20 if shape == "linear" else 1 - math.sqrt(1 / 20)
    assert lr_factor(80, p) == pytest.approx(0.1 + 0.9 * first)  # decay_start(100, 0.2): decaying
    assert lr_factor(89, p) == pytest.approx(mid)
    assert lr_factor(99, p) == pytest.approx(0.1)  # the planned last update


def test_constant_and_sbv2():
    c = _plan("constant", 50, warmup_steps=4)
    assert [lr_factor(s, c) for s in (0, 3, 4, 49, 500)] == [0.25, 1.0, 1.0, 1.0, 1.0]
    e = _plan("sbv2", 50, lr_decay=0.5)  # per epoch of 7 batches: today's SBV2 schedule
    assert [lr_factor(s, e) for s in (0, 6, 7, 13, 14)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    s = _plan("sbv2", 50, lr_decay=0.5, scheduler_per="step")
    assert [lr_factor(k, s) for k in (0, 1, 2)] == [1.0, 0.5, 0.25]


def test_a_trunk_runs_constant_to_its_last_branch_point():
    cfg = tiny_config()
    t = cfg.train
    t.lr_schedule, t.warmup_steps, t.cooldown_frac = "wsd", 3, 0.25
    t.branch_budgets = [8_000.0, 12_000.0, 12_500.0]
    b = plan_budget(cfg, 1000, 7)
    assert b.source == "branch_budgets" and b.branch_points == {8e3: (8, 6), 12e3: (12, 9), 12.5e3: (12, 9)}
    assert b.steps == 9 and b.schedule.kind == "constant" and b.schedule.branch_points == (6, 9)
    assert [lr_factor(s, b.schedule) for s in (0, 2, 8)] == [pytest.approx(1 / 3), 1.0, 1.0]
    t.branch_budgets, t.branch_from, t.compute_budget = [], "some/trunk", 12_000.0
    br = plan_budget(cfg, 1000, 7)  # a branch: its own budget's steps, and the branch point
    assert (br.steps, br.branch_step, br.schedule.kind) == (12, 9, "wsd")


# ----------------------------------------------------------------------------------------------------
# bad input: refused when the config is built (file and field) or when the plan is made


BAD = [
    ({"warmup_steps": 5, "warmup_frac": 0.1}, "train.warmup_frac", "both set"),
    ({"warmup_steps": 50, "steps": 40}, "train.warmup_steps", "longer than the plan"),
    ({"cooldown_frac": 0.0}, "train.cooldown_frac", "outside (0, 1)"),
    ({"cooldown_frac": 1.0}, "train.cooldown_frac", "outside (0, 1)"),
    ({"min_lr_frac": -0.1}, "train.min_lr_frac", "outside [0, 1]"),
    ({"min_lr_frac": 1.5}, "train.min_lr_frac", "outside [0, 1]"),
    ({"warmup_frac": 1.2}, "train.warmup_frac", "outside [0, 1]"),
    ({"lr_schedule": "sbv2", "warmup_steps": 3}, "train.lr_schedule", "no warm-up"),
    ({"learning_rate": 0.0}, "train.learning_rate", "positive"),
    ({"grad_clip_g": -1.0}, "train.grad_clip_g", "positive or null"),
    ({"branch_budgets": [1e9]}, "train.lr_schedule", "needs lr_schedule wsd"),
    ({"branch_budgets": [1e9], "lr_schedule": "wsd", "warmup_frac": 0.1}, "train.warmup_frac", "in steps"),
    ({"branch_budgets": [1e9], "lr_schedule": "wsd", "compute_budget": 1e9}, "train.compute_budget", "trunk"),
    ({"branch_budgets": [1e9], "lr_schedule": "wsd", "steps": 10}, "train.steps", "trunk"),
    ({"branch_budgets": [1e9, -2], "lr_schedule": "wsd"}, "train.branch_budgets[1]", "positive"),
    ({"branch_from": "t", "lr_schedule": "wsd"}, "train.compute_budget", "needs its compute_budget"),
    ({"branch_from": "t", "compute_budget": 1e9}, "train.lr_schedule", "needs lr_schedule wsd"),
    ({"branch_from": "t", "lr_schedule": "wsd", "compute_budget": 1e9, "init_from": "x"}, "train.init_from", "branch"),
]  # fmt: skip


@pytest.mark.parametrize(("train", "field", "why"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_schedule_and_branch_settings_refused_with_file_and_field(tmp_path, train, field, why):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}.{field}" in str(e.value) and why in str(e.value), str(e.value)


def test_warmup_longer_than_a_budget_plan_refused_before_training():
    cfg = tiny_config()
    cfg.train.compute_budget, cfg.train.warmup_steps = 10_000.0, 11  # 10 steps of 1000 FLOPs
    with pytest.raises(
        ConfigError, match=r"train.warmup_steps: the warm-up \(11 steps\) is longer than the plan"
    ):
        plan_budget(cfg, 1000, 7)
    cfg.train.lr_schedule, cfg.train.warmup_steps = "wsd", 9  # cooldown starts at step 8
    with pytest.raises(ConfigError, match=r"longer than the cooldown start \(step 8 of 10"):
        plan_budget(cfg, 1000, 7)
    cfg.train.warmup_steps, cfg.train.warmup_frac = 0, 0.9
    with pytest.raises(ConfigError, match="train.warmup_frac"):
        plan_budget(cfg, 1000, 7)
    trunk = TrialConfig.from_dict(
        {"train": {"lr_schedule": "wsd", "warmup_steps": 7, "branch_budgets": [8e3, 2e4]}}
    )
    with pytest.raises(ConfigError, match=r"longer than the first branch point \(step 6\)"):
        plan_budget(trunk, 1000, 7)
    trunk.train.branch_budgets = [1000.0, 2e4]  # one step: its cooldown would be the whole run
    trunk.train.warmup_steps = 0
    with pytest.raises(ConfigError, match=r"train.branch_budgets\[0\].*step 0"):
        plan_budget(trunk, 1000, 7)


# ----------------------------------------------------------------------------------------------------
# trunk and branches, trained


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    cfg = prepared_config(tmp_path_factory.mktemp("schedule"))
    cfg.train.lr_schedule, cfg.train.warmup_steps, cfg.train.cooldown_frac = "wsd", 2, 0.25
    cfg.train.cooldown_shape, cfg.train.log_interval = "linear", 1
    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    fps = flops_per_step(cfg, utterance_s=data.mean_utterance_s, disk_cache=cfg.data.cache_dir)
    return cfg, fps


def _trial(base, path, **train) -> TrialConfig:
    cfg = TrialConfig.from_dict(base.to_dict())
    cfg.output_dir = str(path)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return TrialConfig.from_dict(cfg.to_dict())  # built again: the config rules apply


def test_branch_equals_an_independent_wsd_trial(base_cfg, tmp_path):
    base, fps = base_cfg
    b8, b12 = 8.5 * fps, 12.5 * fps  # T = 8 and 12 steps; branch points 6 and 9 (cooldown 2 and 3)
    trunk = _trial(base, tmp_path / "trunk", branch_budgets=[b8, b12], checkpoint_every=4, keep_checkpoints=1)
    st = MemorySink()
    rt = run_trial(trunk, st, resume=False)
    assert rt.status == "finished" and rt.steps == 9 and st.last("steps_planned") == 9
    parts = ("enc_p", "flow", "dec", "sdp", "dp", "enc_q", "emb_g", "disc_mpd")  # N per submodule, logged
    assert all(st.last(f"params_{p}") > 0 for p in parts)
    assert sum(st.last(f"params_{p}") for p in parts[:-1]) == st.last("params_generator")
    ck = list_checkpoints(tmp_path / "trunk" / "checkpoints")
    assert [s for s, _ in ck] == [6, 8, 9] and [is_kept(p) for _, p in ck] == [True, False, True]  # 4 rotated
    assert st.history("branch_step") == [(6, 6), (9, 9)]
    doc = json.loads((tmp_path / "trunk" / "branch_points.json").read_text())
    assert [(p["budget"], p["steps"], p["branch_step"]) for p in doc["points"]] == [(b8, 8, 6), (b12, 12, 9)]
    assert doc["flops_per_step"] == fps and doc["cooldown_frac"] == 0.25
    assert [v for _, v in st.history("lr")][1:] == [base.train.learning_rate] * 8  # no cooldown in a trunk

    solo = _trial(base, tmp_path / "solo", compute_budget=b12)
    ss = MemorySink()
    rs = run_trial(solo, ss, resume=False)
    assert rs.steps == 12

    branch = _trial(base, tmp_path / "branch", compute_budget=b12, branch_from=str(tmp_path / "trunk"))
    branch.train.checkpoint_every = 10

    first = MemorySink()
    with pytest.raises(RuntimeError, match="injected crash"):  # a retry after its own checkpoint at 10
        run_trial(branch, first, resume=True, step_fn=crash_after(10))
    assert first.history("branch_step") == [(9, 9)]
    assert first.params["branch.source"].endswith("trunk/checkpoints/ckpt_00000009.pt")
    assert [s for s, _ in first.history("loss_mel")] == [10]  # it started at the branch point
    sb = MemorySink()
    rb = run_trial(branch, sb, resume=True)  # resumes from its own step-10 checkpoint, not the trunk's
    assert rb.status == "finished" and rb.steps == 12 and "branch.source" not in sb.params
    assert [s for s, _ in sb.history("loss_mel")] == [11, 12]

    # C and D: the trunk's up to the branch point plus the branch's own
    assert sb.last("flops") == 12 * fps == ss.last("flops") and sb.last("total_flops") == 12 * fps
    assert sb.last("data_seen_s") == ss.last("data_seen_s")
    pa, pb = load_checkpoint(rs.checkpoint), load_checkpoint(rb.checkpoint)
    assert pa["counters"] == pb["counters"]
    # the lr curve of the branch is the independent trial's
    lrs = dict(ss.history("lr"))
    assert dict(first.history("lr") + sb.history("lr")) == {s: lrs[s] for s in (10, 11, 12)}
    assert dict(sb.history("lr_d")) == {s: lrs[s] for s in (11, 12)}
    lr0 = base.train.learning_rate
    assert (
        lrs[9] == lr0
        and lrs[10] == pytest.approx(lr0 * (1 - 0.9 / 3))
        and lrs[12] == pytest.approx(0.1 * lr0)
    )
    # and so are its weights, bit for bit
    wa, wb = checkpoint_weights(rs.checkpoint), checkpoint_weights(rb.checkpoint)
    diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    print(f"branch vs independent wsd trial: max |weight difference| = {diff:g} over {len(wa)} tensors")
    assert wa.keys() == wb.keys() and diff == 0.0


def test_branch_refused_when_trunk_differs_or_has_no_checkpoint_there(base_cfg, tmp_path):
    base, fps = base_cfg
    trunk = _trial(base, tmp_path / "trunk", branch_budgets=[8.5 * fps])  # one branch point: step 6
    assert run_trial(trunk, MemorySink(), resume=False).steps == 6
    ref = str(tmp_path / "trunk")
    other = _trial(base, tmp_path / "b1", compute_budget=8.5 * fps, branch_from=ref, learning_rate=3e-4)
    with pytest.raises(CheckpointMismatch, match=r"train.learning_rate: 0.0001 -> 0.0003"):
        run_trial(other, MemorySink(), resume=False)
    other = _trial(base, tmp_path / "b2", compute_budget=8.5 * fps, branch_from=ref, seed=3)
    with pytest.raises(CheckpointMismatch, match=r"train.seed: 42 -> 3"):
        run_trial(other, MemorySink(), resume=False)
    other = _trial(base, tmp_path / "b3", compute_budget=8.5 * fps, branch_from=ref)
    other.model.dp_filter_channels = 16
    with pytest.raises(CheckpointMismatch, match=r"model.dp_filter_channels: 32 -> 16"):
        run_trial(other, MemorySink(), resume=False)
    missing = _trial(base, tmp_path / "b4", compute_budget=12.5 * fps, branch_from=ref)  # its point: 9
    with pytest.raises(CheckpointMismatch, match=r"no checkpoint at step 9 .*steps \[6\]"):
        run_trial(missing, MemorySink(), resume=False)


def test_precision_on_cpu_trains_fp32_and_warns_once(monkeypatch, caplog):
    import model.train.loop as loop

    monkeypatch.setattr(loop, "_warned_cpu_precision", False)
    cfg = tiny_config()
    cfg.train.precision = "bf16"
    with caplog.at_level("WARNING", logger="model.train.loop"):
        loop.setup_backends(torch.device("cpu"), cfg)
        cfg.train.precision = "tf32"
        loop.setup_backends(torch.device("cpu"), cfg)
    assert [r.getMessage() for r in caplog.records] == [
        "train.precision bf16 applies to CUDA only: this cpu run trains in fp32"
    ]
    state = build_train_state(cfg, "cpu")
    assert state.autocast_dtype is None  # no autocast on CPU whatever was asked
