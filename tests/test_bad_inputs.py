"""Malformed inputs through the real CLI (a subprocess, as a user runs it): each must exit non-zero with no
traceback, and its message must name the file and the field or line.

The inputs live in ``tests/bad_inputs/``; each case says the command, the exit code and the fragments the
message must hold. One row per class of problem (see issue 19); the unit tests beside them check the
mechanism (``model.textfile``, ``orchestrator.expr``) directly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from model.textfile import TextFileError, parse_json, parse_yaml
from orchestrator.expr import MAX_INT_BITS, Expr, ExprError
from tests.orch_helpers import ROOT, cli

BAD = ROOT / "tests" / "bad_inputs"

# (case id, args (BAD/<file> written as {bad}/<file>), exit code, regexes the combined output must match)
CASES = [
    (
        "sweep-is-a-directory",
        ["sweep", "submit", "{bad}", "--dry-run"],
        2,
        [r"bad_inputs", r"is a directory"],
    ),
    (
        "sweep-not-utf8",
        ["sweep", "submit", "{bad}/not_utf8.yaml", "--dry-run"],
        2,
        [r"not_utf8\.yaml", r"line 4, column \d+", r"not UTF-8"],
    ),
    (
        "sweep-duplicate-axis",
        ["sweep", "submit", "{bad}/duplicate_key.yaml", "--dry-run"],
        2,
        [r"duplicate_key\.yaml", r"'width' is given twice", r"lines 5 and 7"],
    ),
    (
        "sweep-duplicate-nested",
        ["sweep", "submit", "{bad}/duplicate_key_nested.yaml", "--dry-run"],
        2,
        [r"duplicate_key_nested\.yaml", r"'batch_size' is given twice", r"lines 5 and 6"],
    ),
    (
        "constraint-power-bomb",
        ["sweep", "submit", "{bad}/expr_power_bomb.yaml", "--dry-run"],
        2,
        [r"expr_power_bomb\.yaml", r"constraints\[0\]", r"9 \*\* 9", r"bound"],
    ),
    (
        "constraint-string-bomb",
        ["sweep", "submit", "{bad}/expr_string_bomb.yaml", "--dry-run"],
        2,
        [r"expr_string_bomb\.yaml", r"constraints\[1\]", r"bound"],
    ),
    (
        "config-duplicate-key",
        ["model", "info", "--config", "{bad}/config_duplicate_key.yaml"],
        2,
        [r"config_duplicate_key\.yaml", r"'hidden_channels' is given twice", r"lines 2 and 3"],
    ),
    (
        "config-is-a-directory",
        ["model", "info", "--config", "{bad}"],
        2,
        [r"bad_inputs", r"is a directory"],
    ),
    (
        "model-info-batch-0",
        ["model", "info", "--batch-size", "0"],
        2,
        [r"--batch-size", r"greater than or (│ )*equal to 1"],
    ),
    ("model-info-segment-0", ["model", "info", "--segment-size", "0"], 2, [r"--segment-size"]),
    ("model-info-bad-preset", ["model", "info", "--preset", "huge"], 2, [r"--preset", r"'huge'", r"tiny"]),
    (
        "config-preset-conflict",
        ["model", "info", "--preset", "default", "--config", "{bad}/config_preset_tiny.yaml"],
        2,
        [r"config_preset_tiny\.yaml", r"preset", r"'tiny'", r"'default'"],
    ),
    (
        "table-not-a-number",
        ["fit", "{bad}/table_not_a_number.csv"],
        2,
        [r"table_not_a_number\.csv", r"column 'val_nelbo', row 3 \(trial b\)", r"'abc' is not a number"],
    ),
    # a table without the metric column: every table command refuses it the same way, naming the column and the
    # columns present (fit used to print "not fitted" under a heading; report crashed with a KeyError)
    *[
        (
            f"table-no-metric-{'-'.join(cmd)}",
            [*cmd, "{bad}/table_no_metric.csv"],
            2,
            [
                r"table_no_metric\.csv",
                r"no column 'val_nelbo' \(name it with --metric\)",
                r"columns present: .*'val_mel_l1'",
            ],
        )
        for cmd in (
            ["fit"],
            ["fit", "--approach", "3"],
            ["backtest"],
            ["report"],
            ["allocate", "--budget", "1e15", "--file"],
        )
    ],
    # N, D, C named otherwise: the same options on every table command, and a missing one names its option
    (
        "table-no-C-names-the-option",
        ["backtest", "{bad}/table_renamed_columns.csv"],
        2,
        [
            r"table_renamed_columns\.csv",
            r"no column 'C' \(name it with --c-col\)",
            r"columns present: .*'flops'",
        ],
    ),
    (
        "table-renamed-to-a-missing-column",
        ["report", "{bad}/table_renamed_columns.csv", "--n-col", "params", "--c-col", "flop"],
        2,
        [r"table_renamed_columns\.csv", r"no column 'flop' \(for C\)", r"'flops'"],
    ),
    (
        "allocate-unknown-gpu",
        ["allocate", "--gpu-hours", "10", "--gpu", "tpu9", "--file", "{bad}/table_renamed_columns.csv"]
        + ["--n-col", "params", "--d-col", "seconds", "--c-col", "flops"],
        2,
        [r"unknown accelerator 'tpu9'; known: \[.*'h100'", r"no trials in the table measured on it"],
    ),
    (
        "sweep-unknown-accelerator",
        ["sweep", "submit", "{bad}/estimate_unknown_accelerator.yaml", "--dry-run"],
        2,
        [
            r"estimate_unknown_accelerator\.yaml",
            r"estimate\.accelerator",
            r"unknown accelerator 'tpu9'",
            r"'h200'",
        ],
    ),
    # a sweep's own trial_fn is code: refused without the user's consent, checked without running it
    (
        "trial-fn-needs-consent",
        ["sweep", "submit", "{bad}/trial_fn_untrusted.yaml"],
        2,
        [r"trial_fn_untrusted\.yaml: trial_fn:", r"evil_trial\.py", r"--allow-trial-fn"],
    ),
    (
        "trial-fn-missing-module",
        ["sweep", "submit", "{bad}/trial_fn_missing_module.yaml", "--dry-run"],
        2,
        [r"trial_fn_missing_module\.yaml: trial_fn:", r"no module 'tests\.bad_inputs\.no_such_module'"],
    ),
    (
        "trial-fn-missing-function",
        ["sweep", "submit", "{bad}/trial_fn_missing_function.yaml", "--dry-run", "--allow-trial-fn"],
        2,
        [r"trial_fn_missing_function\.yaml: trial_fn:", r"defines no top-level 'no_such_function'"],
    ),
    # a base file is read only from the sweep file's own directory tree (or a --base-root given by the user)
    (
        "base-outside-sweep-tree",
        ["sweep", "submit", "{bad}/base_outside.yaml", "--dry-run"],
        2,
        [
            r"base_outside\.yaml: base\.file: '\.\./\.\./pyproject\.toml'",
            r"outside the sweep's directory tree",
            r"--base-root DIR",
            r"nothing was read",
        ],
    ),
    (
        "base-absolute-elsewhere",
        ["sweep", "submit", "{bad}/base_absolute.yaml", "--dry-run"],
        2,
        [r"base_absolute\.yaml: base\.file: '/etc/passwd' resolves to /etc/passwd, outside", r"--base-root"],
    ),
    # read-only commands on a sweep that does not exist: say so, create no store (asserted for every case)
    *[
        (
            f"read-only-{cmd}",
            [cmd, "nosuch"],
            2,
            [r"sweep 'nosuch' not found", r"no tracking store at \S*mlflow\.db"],
        )
        for cmd in ("fit", "best", "ui", "report", "backtest")
    ],
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_cli(case, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("VITS_SCALING_ALLOW_TRIAL_FN", raising=False)  # consent only from the case's own args
    _, args, code, patterns = case
    args = [a.replace("{bad}", str(BAD)) for a in args]
    p = cli(*args, cwd=tmp_path, check=False, timeout=300)  # an expression bomb that were computed would hang
    out = p.stdout + p.stderr
    assert p.returncode == code, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())  # a message is judged as text, whatever the console's line width
    for pat in patterns:
        assert re.search(pat, flat), f"{pat!r} not in: {flat}"
    assert not (tmp_path / "runs").exists(), "a refused input must not create a store"
    assert not (tmp_path / "IMPORTED_evil_trial").exists(), "a sweep's trial_fn ran without consent"


def test_trial_fn_dry_run_resolves_without_running(tmp_path: Path, monkeypatch):
    """The dry run of a sweep with its own trial_fn succeeds, says what submitting needs, and runs none of it."""
    monkeypatch.delenv("VITS_SCALING_ALLOW_TRIAL_FN", raising=False)
    p = cli("sweep", "submit", str(BAD / "trial_fn_untrusted.yaml"), "--dry-run", cwd=tmp_path, check=False)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0, out
    assert re.search(
        r"note: trial_fn 'tests\.bad_inputs\.evil_trial:run_trial' runs code from \S*evil_trial\.py", out
    )
    assert "submitting needs --allow-trial-fn" in out
    assert not (tmp_path / "IMPORTED_evil_trial").exists() and not (tmp_path / "runs").exists()


def test_find_trial_fn_runs_no_package_code(tmp_path: Path, monkeypatch):
    """Neither the module nor its parent packages are executed; names are read from the source."""
    import sys

    from orchestrator.plan import SpecError
    from orchestrator.trial import find_trial_fn

    pkg = tmp_path / "sidefx_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('package code ran')\n")
    (pkg / "trials.py").write_text(
        "raise SystemExit('module code ran')\n"
        "def run_trial(cfg, sink, resume=True): ...\n"
        "if True:\n    alias = run_trial\n"
        "try:\n    from os import path as other\nexcept ImportError:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert find_trial_fn("sidefx_pkg.trials:run_trial") == str(pkg / "trials.py")
    assert find_trial_fn("sidefx_pkg.trials.alias") == str(pkg / "trials.py")
    assert find_trial_fn("sidefx_pkg.trials:other")
    with pytest.raises(SpecError, match="defines no top-level 'nope'"):
        find_trial_fn("sidefx_pkg.trials:nope")
    with pytest.raises(SpecError, match="no module 'sidefx_pkg.absent'"):
        find_trial_fn("sidefx_pkg.absent:run_trial")
    with pytest.raises(SpecError, match="expected 'package.module:function'"):
        find_trial_fn("sidefx_pkg.trials:")
    assert "sidefx_pkg" not in sys.modules and "sidefx_pkg.trials" not in sys.modules


def test_resume_needs_the_consent_recorded(tmp_path: Path, monkeypatch):
    """A sweep state with a custom trial_fn and no recorded consent is refused on resume (before any Ray),
    naming the state file and the flag; the project's own trial_fn needs none."""
    import json

    from orchestrator import state as st
    from orchestrator.driver import resume_sweep
    from orchestrator.plan import SpecError

    monkeypatch.delenv("VITS_SCALING_ALLOW_TRIAL_FN", raising=False)
    d = tmp_path / "sweeps" / "s"
    d.mkdir(parents=True)
    (d / st.STATE_FILE).write_text(
        json.dumps({"name": "s", "trial_fn": "tests.bad_inputs.evil_trial:run_trial"})
    )
    (d / st.TRIALS_FILE).write_text("{}")
    with pytest.raises(SpecError, match=r"sweep\.json: trial_fn: .*--allow-trial-fn"):
        resume_sweep(d, progress=False)
    assert "trial_fn_allowed" not in st.load_state(d)

    import orchestrator.driver as drv

    class Ran(Exception):
        pass

    def fake_run(sweep_dir, **kw):  # stands in for Ray: resume got past the consent check
        raise Ran(st.load_state(sweep_dir).get("trial_fn_allowed"))

    monkeypatch.setattr(drv, "_run", fake_run)
    with pytest.raises(Ran) as e:
        resume_sweep(d, progress=False, allow_trial_fn=True)
    assert e.value.args == (True,)  # the consent given now is recorded before the sweep runs
    with pytest.raises(Ran):
        resume_sweep(d, progress=False)  # ... and a later resume needs no flag


def test_base_file_confined_and_never_echoed(tmp_path: Path):
    """A base file reached through a symlink out of the tree is refused; one in a tree the user allows with
    --base-root is read, and an error about it names file and field but not the value it holds."""
    sweeps, elsewhere = tmp_path / "sweeps", tmp_path / "elsewhere"
    sweeps.mkdir()
    elsewhere.mkdir()
    (elsewhere / "base.yaml").write_text("model: {hidden_channels: sk-secret-456}\n", encoding="utf-8")
    (sweeps / "link.yaml").symlink_to(elsewhere / "base.yaml")
    for base in ("link.yaml", "../elsewhere/base.yaml"):
        f = sweeps / "s.yaml"
        f.write_text(f"name: s\nbase: {base}\naxes: {{width: [16]}}\nestimate: {{count: false}}\n")
        p = cli("sweep", "submit", str(f), "--dry-run", cwd=tmp_path, check=False)
        out = " ".join((p.stdout + p.stderr).split())
        assert p.returncode == 2 and "Traceback" not in out, out
        assert f"base.file: '{base}' resolves to {elsewhere / 'base.yaml'}, outside" in out, out
        assert "sk-secret" not in out
        p = cli(
            "sweep", "submit", str(f), "--dry-run", "--base-root", str(elsewhere), cwd=tmp_path, check=False
        )
        out = " ".join((p.stdout + p.stderr).split())
        assert p.returncode == 2 and "Traceback" not in out, out
        assert re.search(r"\.yaml\.model\.hidden_channels: expected int, got a value not shown", out), out
        assert "sk-secret" not in out and "outside" not in out
    (elsewhere / "base.yaml").write_text("model: {n_layers: 3}\n", encoding="utf-8")
    p = cli("sweep", "submit", str(f), "--dry-run", "--json", "--base-root", str(elsewhere), cwd=tmp_path)
    import json

    assert {r["hidden_channels"] for r in json.loads(p.stdout)["trials"]} == {
        16
    }  # the axis on top of the file


def test_duplicate_keys_unit():
    with pytest.raises(TextFileError, match=r"'a' is given twice \(lines 1 and 3\)"):
        parse_yaml("a: 1\nb: 2\na: 3\n", "x.yaml")
    assert parse_yaml("a: &d {x: 1}\nb:\n  <<: *d\n  x: 2\n", "x.yaml") == {"a": {"x": 1}, "b": {"x": 2}}
    with pytest.raises(TextFileError, match=r"x.json: key 'a' is given twice"):
        parse_json('{"a": 1, "a": 2}', "x.json")
    assert parse_json('{"a": {"a": 1}}', "x.json") == {"a": {"a": 1}}  # the same key in two objects is fine


def test_expression_bounds_unit():
    for text in ("9 ** 9 ** 9 ** 9", "2 ** 5000", "(-3) ** 100000", "'a' * 10 ** 9", "'%999999999d' % 1"):
        t0 = time.perf_counter()
        with pytest.raises(ExprError, match="bound|not allowed"):
            Expr(text)({})
        assert time.perf_counter() - t0 < 10.0, text  # refused before computing (a computed one never ends)
    with pytest.raises(ExprError, match="characters"):
        Expr("x + " * 1000 + "x")
    # ordinary arithmetic is untouched
    assert Expr("2 ** 10 == 1024")({})
    assert Expr("width * 2 ** 3 == 256")({"width": 32})
    assert Expr("2 ** 0.5 > 1.41")({})
    assert Expr(f"2 ** {MAX_INT_BITS - 1} > 0")({})


def _corpus_with_bad_lines(tmp: Path) -> Path:
    """``tests/bad_inputs/corpus_bad_lines/esd.list`` (line 2 not UTF-8, line 3 a speaker name with '|')
    beside 14 short generated wavs."""
    import numpy as np
    import soundfile as sf

    root = tmp / "corpus"
    (root / "wavs").mkdir(parents=True)
    (root / "esd.list").write_bytes((BAD / "corpus_bad_lines" / "esd.list").read_bytes())
    t = np.arange(int(44100 * 2.0)) / 44100
    for i in range(14):
        sf.write(
            root / "wavs" / f"u{i}.wav",
            (0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype("float32"),
            44100,
        )
    return root


def test_corpus_bad_lines_lenient_drops_only_them(tmp_path: Path):
    root = _corpus_with_bad_lines(tmp_path)
    p = cli("data", "info", str(root), "--json", cwd=tmp_path, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    import json

    res = json.loads(p.stdout)
    assert res["utterances"] == 12 and res["dropped"] == {"bad_line": 2}
    rows = Path(tmp_path / res["dropped_list"]).read_text(encoding="utf-8").splitlines()[1:]
    by_line = {r.split("\t")[0].rsplit(":", 1)[1]: r for r in rows}
    assert set(by_line) == {"2", "3"}
    assert "not UTF-8 (byte 0xff at column 21)" in by_line["2"]
    assert "speaker name contains '|'" in by_line["3"] and "unsupported language" not in by_line["3"]


def test_corpus_bad_lines_strict_names_the_line(tmp_path: Path):
    root = _corpus_with_bad_lines(tmp_path)
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("data:\n  strict: true\n", encoding="utf-8")
    p = cli("data", "info", str(root), "--config", str(cfg), cwd=tmp_path, check=False)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 2 and "Traceback" not in out, out
    assert re.search(r"esd\.list:2: .*not UTF-8 \(byte 0xff at column 21\)", out), out


def test_messages_not_wrapped_in_a_log(tmp_path: Path):
    """Not a terminal (CI, `| tee`): a message stays on one line however long, so it can be grepped."""
    missing = tmp_path / ("a-long-directory-name-" * 4) / "sweep.yaml"
    p = cli("sweep", "submit", str(missing), "--dry-run", cwd=tmp_path, check=False)
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert str(missing) in lines[0] and "not found" in lines[0]


def test_progress_in_a_log_is_plain_lines():
    import io

    from model.data.files import progress_bar

    class Log(io.StringIO):
        def isatty(self) -> bool:
            return False

    log = Log()
    bar = progress_bar(True, 36.0, "synth", unit="s", every_s=0.0, stream=log)
    for _ in range(19):  # 19 updates of 2.54 s: past the 36 s target, as the corpus builder's last round is
        bar.update(2.5405442176870747)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("synth: 2/36 s (6%")
    assert all(re.match(r"synth: \d+/36 s \(\d+%, \d+ s\)$", ln) for ln in lines)
    assert lines[-1].startswith("synth: 36/36 s (100%")  # capped at the total, whole numbers
    counts = [int(re.match(r"synth: (\d+)/", ln).group(1)) for ln in lines]
    assert counts == sorted(set(counts)) and len(lines) == 15  # one line per new count, the last one once


def test_documented_commands_exist():
    """Every `vits-scaling <command> [<subcommand>]` written in README, docs and the shipped sweeps exists."""
    from typer.main import get_command

    from orchestrator.cli import app

    root = get_command(app)
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "sweeps").glob("*.yaml")),
    ]
    seen = 0
    for f in files:
        text = re.sub(r"\n#\s*", " ", f.read_text(encoding="utf-8"))  # a command may wrap in a YAML comment
        # in inline code (`vits-scaling fit ...`) or at the start of a line of a code block
        pat = r"(?:`|^[ \t]*(?:\$[ \t]*)?)vits-scaling[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?"
        for m in re.finditer(pat, text, flags=re.M):
            name, sub = m.group(1), m.group(2)
            assert name in root.commands, f"{f.name}: `vits-scaling {name}` is not a command"
            group = root.commands[name]
            if hasattr(group, "commands") and sub and not sub.startswith("-"):
                assert sub in group.commands, f"{f.name}: `vits-scaling {name} {sub}` is not a command"
            seen += 1
    assert seen > 20


def test_read_only_commands_on_an_existing_store(tmp_path: Path):
    """A store that exists but holds no such sweep: the commands say the sweep does not exist."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the (empty) store
    for args in (["best", "nosuch"], ["ui", "nosuch"], ["fit", "nosuch"]):
        p = cli(*args, "--tracking-uri", uri, cwd=tmp_path, check=False)
        out = " ".join((p.stdout + p.stderr).split())
        assert p.returncode == 2 and "Traceback" not in out, out
        assert re.search(r"nosuch", out) and re.search(
            r"not found|no trial runs|no MLflow experiment", out
        ), out


def test_trial_fn_refusal_comes_before_the_plan_table(tmp_path: Path, monkeypatch):
    """Without consent, submitting a sweep with its own trial_fn prints the refusal and no trial table (a
    table would read as if the sweep had started)."""
    monkeypatch.delenv("VITS_SCALING_ALLOW_TRIAL_FN", raising=False)
    p = cli("sweep", "submit", str(BAD / "trial_fn_untrusted.yaml"), cwd=tmp_path, check=False, timeout=300)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 2 and "--allow-trial-fn" in out, out
    assert not re.search(r"sweep \S+: \d+ trials", out), out
