"""Pretraining then fine-tuning (issue 10): a trial started from another trial's checkpoint.

Trainer (tiny config, built-in 16 kHz corpus): a fine-tune trial starts with a lower held-out NELBO than the
same trial from scratch; it carries the pretraining compute and data; a resumed fine-tune continues from its
own checkpoint; freezing keeps parts out of the optimizer and unchanged; the speaker table is resized,
re-initialised or kept; a missing or mismatched checkpoint fails with a clear error.
"""

from __future__ import annotations

import pytest
import torch

from model.config import ConfigError, tiny_config
from model.sink import MemorySink
from model.train import run_trial
from model.train.checkpoint import list_checkpoints, load_checkpoint
from model.train.init import InitError, build_state, freeze, load_init, resolve_init_path

PRETRAIN_STEPS = 30


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(base config, finished pretraining trial result) — one tiny pretraining run for the module."""
    root = tmp_path_factory.mktemp("pretrain")
    cfg = tiny_config()
    d = cfg.data
    d.corpus_dir, d.cache_dir = str(root / "corpus"), str(root / "cache")
    d.builtin_hours, d.builtin_speakers = 0.015, 2
    d.val_utterances, d.prepare_workers = 3, 1
    cfg.train.log_interval = 10
    cfg.eval.n_utterances = 0
    cfg.output_dir = str(root / "pre")
    cfg.trial_id, cfg.sweep = "pre0", "pt"
    cfg.tracking.run_id = "run-of-pre0"
    cfg.train.steps = PRETRAIN_STEPS
    res = run_trial(cfg, MemorySink(), resume=False)
    assert res.status == "finished"
    return cfg, res


def _ft(base, tmp_path, **train):
    cfg = type(base).from_dict(base.to_dict())
    cfg.output_dir = str(tmp_path / "ft")
    cfg.trial_id, cfg.tracking.run_id = "ft0", None
    cfg.train.steps = 2
    cfg.train.seed = 7  # a different trial: its own seed
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _val_nelbo(cfg, init: bool) -> float:
    from model.train.data import TrialData
    from model.train.evaluate import evaluate
    from model.train.loop import seed_everything

    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    seed_everything(cfg.train.seed)
    state = build_state(cfg, "cpu")
    if init:
        load_init(state, cfg)
    return evaluate(state.net_g, data.val_batches(), cfg, synthesis=False).metrics["val_nelbo"]


def test_checkpoint_stores_compute_data_and_run_id(pretrained):
    cfg, res = pretrained
    p = load_checkpoint(res.checkpoint)
    c = p["counters"]
    assert c["flops"] > 0 and c["flops"] == pytest.approx(PRETRAIN_STEPS * (c["flops"] / PRETRAIN_STEPS))
    assert 0 < c["data_hours"] <= 0.015 and c["data_seen_s"] > 0
    assert p["config"]["tracking"]["run_id"] == "run-of-pre0"


def test_finetune_starts_below_scratch_and_logs_pretraining(pretrained, tmp_path):
    base, res = pretrained
    # constant lr: a resume may then extend the trial (2 -> 4 steps below); a cosine one would be refused
    cfg = _ft(base, tmp_path, init_from=base.output_dir, lr_schedule="constant")
    cfg.data.n_speakers = 3  # a different speaker table: resized
    scratch = _val_nelbo(cfg, init=False)
    tuned = _val_nelbo(cfg, init=True)
    print(
        f"step-0 held-out NELBO: from scratch {scratch:.2f}, from a {PRETRAIN_STEPS}-step pretrain {tuned:.2f}"
    )
    assert tuned < 0.97 * scratch, (tuned, scratch)

    mem = MemorySink()
    out = run_trial(cfg, mem, resume=True)
    assert out.status == "finished" and out.steps == 2
    pre = load_checkpoint(res.checkpoint)["counters"]
    assert mem.last("pretrain_flops") == pytest.approx(pre["flops"])
    assert mem.last("pretrain_hours") == pytest.approx(pre["data_hours"])
    assert mem.last("pretrain_steps") == PRETRAIN_STEPS
    assert mem.params["pretrain.run_id"] == "run-of-pre0"
    assert mem.params["pretrain.trial_id"] == "pre0" and mem.params["pretrain.sweep"] == "pt"
    assert mem.params["pretrain.source"] == str(res.checkpoint)
    # fine-tune compute starts at 0 (the pretraining compute is reported apart)
    assert mem.history("flops")[0][1] == pytest.approx(2 * mem.last("flops_per_step"))

    # its own checkpoint carries the pretraining on (a chain of fine-tunes counts it all) ...
    own = load_checkpoint(out.checkpoint)
    assert own["counters"]["pretrain_flops"] == pytest.approx(pre["flops"])
    assert own["train_state"]["extra"]["init"]["run_id"] == "run-of-pre0"
    # ... and a resumed fine-tune continues from it (step 2 -> 4), not from the pretraining checkpoint
    cfg.train.steps = 4
    mem2 = MemorySink()
    out2 = run_trial(cfg, mem2, resume=True)
    assert out2.steps == 4 and min(s for s, _ in mem2.history("loss_mel")) > 2
    assert mem2.last("pretrain_flops") == pytest.approx(pre["flops"])
    assert [s for s, _ in list_checkpoints(tmp_path / "ft" / "checkpoints")][-1] == 4


def test_freeze_keeps_parts_out_of_the_optimizer_and_unchanged(pretrained, tmp_path):
    base, res = pretrained
    cfg = _ft(base, tmp_path, init_from=str(res.checkpoint), freeze=["enc_p", "flow.flows.0"], steps=2)
    out = run_trial(cfg, MemorySink(), resume=False)
    assert out.status == "finished"
    before = load_checkpoint(res.checkpoint)["train_state"]["net_g"]
    after = load_checkpoint(out.checkpoint)["train_state"]["net_g"]
    frozen = [k for k in after if k.startswith(("enc_p.", "flow.flows.0."))]
    trained = [k for k in after if k.startswith("dec.") and after[k].is_floating_point()]
    assert frozen and trained
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in trained)

    state = build_state(cfg, "cpu")
    in_opt = {id(p) for g in state.optim_g.param_groups for p in g["params"]}
    for name, p in state.net_g.named_parameters():
        is_frozen = name.startswith(("enc_p.", "flow.flows.0."))
        assert (id(p) in in_opt) != is_frozen, name
        assert p.requires_grad != is_frozen, name
    with pytest.raises(ConfigError, match="train.freeze: 'enc_x' names no generator parameters"):
        freeze(state.net_g, ["enc_x"])


def test_speaker_table_resize_reinit_keep(pretrained, tmp_path):
    base, res = pretrained
    old = load_checkpoint(res.checkpoint)["train_state"]["net_g"]["emb_g.weight"]  # 4 speakers
    assert old.shape[0] == 4
    for n, mode in ((6, "resize"), (2, "resize"), (6, "reinit"), (4, "keep")):
        cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers=mode)
        cfg.data.n_speakers = n
        torch.manual_seed(0)
        state = build_state(cfg, "cpu")
        fresh = state.net_g.emb_g.weight.detach().clone()
        load_init(state, cfg)
        w = state.net_g.emb_g.weight.detach()
        assert w.shape == (n, old.shape[1])
        if mode == "reinit":
            assert torch.equal(w, fresh)
            continue
        k = min(n, 4)
        assert torch.equal(w[:k], old[:k])
        if n > 4:
            assert torch.allclose(w[4:], old.mean(0).expand(n - 4, -1))
        # everything else is loaded as is
        assert torch.equal(
            state.net_g.dec.conv_pre.weight,
            load_checkpoint(res.checkpoint)["train_state"]["net_g"]["dec.conv_pre.weight"],
        )
    cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers="keep")
    cfg.data.n_speakers = 3
    with pytest.raises(InitError, match="init_speakers=keep"):
        load_init(build_state(cfg, "cpu"), cfg)


def test_bad_init_sources_fail_clearly(pretrained, tmp_path):
    base, _ = pretrained
    cfg = _ft(base, tmp_path)
    with pytest.raises(InitError, match="no such checkpoint file or trial directory"):
        resolve_init_path(str(tmp_path / "nope"), cfg)
    with pytest.raises(InitError, match=r"'sweep:pt/missing': no checkpoint of that trial"):
        resolve_init_path("sweep:pt/missing", cfg)
    with pytest.raises(InitError, match="expected 'sweep:<name>/<trial_id>'"):
        resolve_init_path("sweep:pt", cfg)
    # a sweep trial finds its sibling trial of the named sweep under the same storage
    sib = _ft(base, tmp_path)
    sib.output_dir, sib.sweep = str(tmp_path / "store" / "ft_sweep" / "trials" / "x"), "ft_sweep"
    (tmp_path / "store" / "pt" / "trials").mkdir(parents=True)
    (tmp_path / "store" / "pt" / "trials" / "pre0").symlink_to(base.output_dir)
    assert resolve_init_path("sweep:pt/pre0", sib).name.startswith("ckpt_")
    # a different model
    cfg = _ft(base, tmp_path, init_from=base.output_dir)
    cfg.model.hidden_channels = cfg.model.inter_channels = 16
    with pytest.raises(InitError, match=r"model differs.*model.hidden_channels: 32 -> 16"):
        load_init(build_state(cfg, "cpu"), cfg)
    cfg = _ft(base, tmp_path, init_from=base.output_dir, init_speakers="fresh")
    with pytest.raises(ConfigError, match="train.init_speakers"):
        load_init(build_state(cfg, "cpu"), cfg)


# ----------------------------------------------------------------------------------------------------
# sweep stages: the plan, errors before launch, the order and kill/resume on a real local Ray


def _stages_yaml(tmp_path, name="stages_fake", **overrides):
    from orch_helpers import sweep_file

    return sweep_file(tmp_path, name, **overrides)


def test_stage_plan_crosses_parents_and_adds_controls(tmp_path):
    from analysis.mlflow_contract import TAG_FROM, TAG_STAGE
    from orchestrator.plan import load_spec, resolve

    plan = resolve(load_spec(_stages_yaml(tmp_path)), count=False)
    pre = [t for t in plan.trials if t.axes["stage"] == "pretrain"]
    ft = [t for t in plan.trials if t.axes["stage"] == "finetune"]
    assert len(pre) == 2 and len(ft) == 4 and plan.trials[:2] == pre  # pretrain first
    by_id = {t.trial_id: t for t in pre}
    for t in ft:
        c = t.config
        assert c.tracking.tags[TAG_STAGE] == "finetune" and c.tracking.tags[TAG_FROM] == t.axes["from"]
        if t.axes["from"] == "scratch":
            assert c.train.init_from is None
        else:
            parent = by_id[t.axes["from"]]
            assert c.train.init_from == parent.config.output_dir
            assert c.model == parent.config.model and t.axes["width"] == parent.axes["width"]
            assert t.axes["pretrain.extra.step_s"] == 0.3
        assert c.data.data_hours == 0.1 and c.output_dir.endswith(t.trial_id)
    # every pretrained model has its from-scratch control at the same fine-tune point
    widths = lambda f: sorted(t.axes["width"] for t in ft if (t.axes["from"] == "scratch") == f)  # noqa: E731
    assert widths(True) == widths(False) == [16, 32]
    # a selector picks a subset
    plan = resolve(load_spec(_stages_yaml(tmp_path, stages=_with_from({"width": 32}))), count=False)
    assert sorted(t.axes["from"] == "scratch" for t in plan.trials if t.axes["stage"] == "finetune") == [
        False,
        True,
    ]


def _with_from(*sel, **finetune):
    import yaml
    from orch_helpers import SWEEPS

    raw = yaml.safe_load((SWEEPS / "stages_fake.yaml").read_text())
    raw["stages"]["finetune"]["from"] = list(sel)
    raw["stages"]["finetune"].update(finetune)
    return raw["stages"]


def test_missing_pretraining_trial_fails_before_launch(tmp_path):
    from orch_helpers import cli

    from orchestrator.plan import SpecError, load_spec, resolve

    f = _stages_yaml(tmp_path, stages=_with_from("0123456789ab"))
    with pytest.raises(SpecError, match=r"stages.finetune.from\[0\]: '0123456789ab' is not a pretrain trial"):
        resolve(load_spec(f), count=False)
    p = cli("sweep", "submit", str(f), "--allow-trial-fn", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "is not a pretrain trial of this sweep" in p.stderr + p.stdout
    assert not (tmp_path / "sweeps" / "stages_fake").exists()  # nothing launched or created
    cases = [
        (_with_from({"width": 48}), r"from\[0\]: \{'width': 48\} matches no pretrain trial"),
        (_with_from({"depth": 2}), r"from\[0\]: depth: not a pretrain axis"),
        (_with_from("sweep:nosuch/abc"), r"'sweep:nosuch/abc': no sweep named 'nosuch'"),
        (_with_from(str(tmp_path / "none.pt")), "no such checkpoint file"),
    ]
    for stages, msg in cases:
        with pytest.raises(SpecError, match=msg):
            resolve(load_spec(_stages_yaml(tmp_path, stages=stages)), count=False)
    bad = _with_from("all")
    bad["finetune"]["axes"]["width"] = [64]
    with pytest.raises(SpecError, match="stages.finetune: width: a fine-tune trial takes its model"):
        load_spec(_stages_yaml(tmp_path, stages=bad))
    bad = _with_from("all")
    bad.pop("pretrain")
    with pytest.raises(SpecError, match="there is no stages.pretrain"):
        load_spec(_stages_yaml(tmp_path, stages=bad))
    bad = _with_from("all")
    bad["pretrain"]["axes"]["n_layers"] = [0]
    with pytest.raises(SpecError, match=r"stages.pretrain: .*axes.n_layers\[0\]"):
        load_spec(_stages_yaml(tmp_path, stages=bad))


def test_shipped_pretrain_finetune_sweeps_resolve():
    from orch_helpers import ROOT

    from orchestrator.plan import load_spec, resolve

    cpu = resolve(load_spec(ROOT / "tests" / "sweeps" / "pretrain_finetune_cpu.yaml"), count=False)
    stages = [t.axes["stage"] for t in cpu.trials]
    assert stages.count("pretrain") == 2 and stages.count("finetune") == 8
    for t in cpu.trials:
        assert t.config.data.sampling_rate == 16000 and t.config.train.steps <= 40
    gpu = load_spec(ROOT / "sweeps" / "pretrain_finetune.yaml")
    assert gpu.stages.pretrain is not None and gpu.stages.finetune.scratch


def _pretrain_done(sweep_dir, pre_ids) -> bool:
    import json

    for tid in pre_ids:
        s = sweep_dir / "trials" / tid / "tracking" / "status.json"
        if not s.exists() or json.loads(s.read_text())["status"] != "finished":
            return False
    return True


@pytest.mark.integration
def test_stages_in_order_and_driver_killed_between_stages_then_resumed(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import time

    from orch_helpers import BIN, cli, env
    from test_orch_ray import _alive, _daemon, _descendants

    from analysis.mlflow_contract import TAG_FROM, TAG_ROLE, TAG_STAGE, TAG_STATUS, TAG_SWEEP
    from orchestrator.plan import load_spec, resolve
    from orchestrator.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    f = _stages_yaml(tmp_path, tracking_uri=uri)
    plan = resolve(load_spec(f), count=False)
    pre_ids = [t.trial_id for t in plan.trials if t.axes["stage"] == "pretrain"]
    ft = {t.trial_id: t for t in plan.trials if t.axes["stage"] == "finetune"}
    sweep_dir = tmp_path / "sweeps" / "stages_fake"
    log = open(tmp_path / "driver.log", "w")
    drv = subprocess.Popen(
        [str(BIN / "vits-scaling"), "sweep", "submit", str(f), "--allow-trial-fn"], cwd=tmp_path, env=env(), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not _pretrain_done(sweep_dir, pre_ids):
            assert drv.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.2)
        assert _pretrain_done(sweep_dir, pre_ids), (tmp_path / "driver.log").read_text()[-3000:]
        family = _descendants(drv.pid)
        os.kill(drv.pid, signal.SIGKILL)  # between the stages (the fine-tune stage may just be starting)
        drv.wait(10)
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(p) and not _daemon(p) for p in family):
            time.sleep(0.5)
    finally:
        if drv.poll() is None:
            drv.kill()
        log.close()
    for p in family:  # only processes of the driver we started
        if _alive(p):
            os.kill(p, signal.SIGKILL)
    ft_done_before = {t for t in ft if (sweep_dir / "trials" / t / "done.json").exists()}
    assert len(ft_done_before) < len(ft), "the kill must land before the fine-tune stage is over"

    p = cli("sweep", "resume", "stages_fake", "--storage", str(tmp_path / "sweeps"), "--json", "--quiet",
            cwd=tmp_path, timeout=240)  # fmt: skip
    res = json.loads(p.stdout)
    assert sorted(r["status"] for r in res["trials"]) == ["finished"] * 6
    # no finished trial ran again: one attempt per pretrain trial (and per fine-tune finished before)
    for tid in pre_ids + sorted(ft_done_before):
        attempts = (sweep_dir / "trials" / tid / "attempts.jsonl").read_text().splitlines()
        assert len(attempts) == 1, tid
    # stage order: every fine-tune trial started after its parent (and every pretrain trial) finished
    last_pre = max(json.loads((sweep_dir / "trials" / t / "done.json").read_text())["time"] for t in pre_ids)
    for tid, t in ft.items():
        first = json.loads((sweep_dir / "trials" / tid / "attempts.jsonl").read_text().splitlines()[0])
        assert first["time"] > last_pre, tid
        if t.axes["from"] != "scratch":
            init = json.loads((sweep_dir / "trials" / tid / "init.json").read_text())
            assert init["parent_done"] is not None and init["start"] > init["parent_done"]
    # MLflow: one run per trial, tagged with the stage and the parent trial
    tr = Tracker(uri)
    runs = tr.search(tr.experiment_id("vits-scaling"), {TAG_SWEEP: "stages_fake", TAG_ROLE: "trial"})
    assert len(runs) == 6
    for r in runs:
        tid = r.data.tags["vits_scaling.trial_id"]
        assert r.data.tags[TAG_STATUS] == "finished"
        if tid in ft:
            assert r.data.tags[TAG_STAGE] == "finetune" and r.data.tags[TAG_FROM] == ft[tid].axes["from"]
            pretrained = ft[tid].axes["from"] != "scratch"
            assert ("pretrain_flops" in r.data.metrics) == pretrained
        else:
            assert r.data.tags[TAG_STAGE] == "pretrain"

    # the analysis table has the stage / pretraining columns; the pretrain-vs-scratch plot draws from it
    from analysis.plots import pretrain_vs_scratch
    from analysis.table import read_mlflow
    from analysis.transfer import split_pretrained

    table = read_mlflow("stages_fake", uri)
    assert {"stage", "from_trial", "pretrain_flops", "pretrain_hours"} <= set(table.columns)
    fine = table[table["stage"] == "finetune"]
    scratch, tuned = split_pretrained(fine)
    assert len(scratch) == 2 and len(tuned) == 2 and (scratch["pretrain_hours"] == 0).all()
    assert (tuned["pretrain_flops"] > 0).all() and set(tuned["from_trial"]) == set(pre_ids)
    assert pretrain_vs_scratch(fine, "val_mel_l1", tmp_path / "plots").exists()
    # under the fake law pretraining transfers data: every fine-tune ends below its scratch control
    for w in (16, 32):
        by = fine[fine["axis.width"] == w].set_index("from_trial")["val_mel_l1"]
        assert by.drop("scratch").max() < by["scratch"]


@pytest.mark.slow
@pytest.mark.integration
def test_cpu_pretrain_finetune_sweep_end_to_end(tmp_path):
    """The shipped CPU study on a local Ray with the real trainer (minutes): pretrained beats scratch."""
    import json

    from orch_helpers import cli

    from analysis.table import read_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    f = _stages_yaml(tmp_path, "pretrain_finetune_cpu", tracking_uri=uri)
    p = cli("sweep", "submit", str(f), "--json", "--quiet", cwd=tmp_path, timeout=1500)
    assert sorted({r["status"] for r in json.loads(p.stdout)["trials"]}) == ["finished"]
    table = read_mlflow("pretrain_finetune_cpu", uri)
    fine = table[table["stage"] == "finetune"]
    assert len(fine) == 8 and (fine.loc[fine["from_trial"] != "scratch", "pretrain_flops"] > 0).all()
    for (w, h), g in fine.groupby(["axis.width", "axis.data_hours"]):
        by = g.set_index("from_trial")["val_nelbo"]
        print(
            f"width={w} fine-tune hours={h}: scratch {by['scratch']:.2f}, pretrained {by.drop('scratch').iloc[0]:.2f}"
        )
        assert by.drop("scratch").iloc[0] < by["scratch"], (w, h)
