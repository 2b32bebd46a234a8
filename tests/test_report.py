"""Tests of robusthyper.report: the page renders from a schema-true fixture run (written with the real
`robusthyper.results` writer), escapes every user string, rejects bad input without writing anything, and
opens in headless Chromium with every image loaded and no console errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robusthyper.errors import UserError
from robusthyper.report import FIGURES, INDEX, build
from robusthyper.results import META, RESULTS_CSV, RESULTS_PARQUET, write_report

ATTACKS = ("fgsm", "pgd")
EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
N = 120
XSS = "<script>alert(1)</script>"


def _outcome(
    rng: np.random.Generator, n: int, acc: float, entropy: float, mi: float
) -> dict[str, np.ndarray]:
    return {
        "correct": rng.random(n) < acc,
        "entropy": rng.gamma(2.0, entropy / 2, n),
        "mi": rng.gamma(2.0, mi / 2, n) if mi > 0 else np.zeros(n),
    }


def make_run(
    root: Path,
    models: tuple[str, ...] | list[str] = ("det", "mcd", "bbh"),
    *,
    examples: bool = True,
    confidence: bool = True,
    run_id: str = "fixture",
    meta: dict | None = None,
) -> Path:
    """A synthetic run with the tables `robusthyper.evaluate.run` produces (same columns, per-example
    outcomes that aggregate to the tidy rows, a per-example worst case over attacks), written with
    `robusthyper.results.write_report`."""
    rng = np.random.default_rng(0)
    rows, example_frames = [], []
    for m, model in enumerate(models):
        stochastic = m > 0
        clean = {"correct": rng.random(N) < 0.95, "entropy": rng.gamma(2.0, 0.05, N),
                 "mi": rng.gamma(2.0, 0.02, N) if stochastic else np.zeros(N)}  # fmt: skip
        conf = np.clip(np.where(clean["correct"], rng.beta(9, 1, N), rng.beta(3, 3, N)), 1e-3, 1)
        worst: dict[float, dict[str, np.ndarray]] = {}
        for a, attack in enumerate(ATTACKS):
            for eps in EPS:
                base = {"model": model, "posterior": "det" if not stochastic else model, "dataset": "mnist5k",
                        "n": N, "attack": attack, "norm": "linf", "eps": eps, "steps": 1 if a == 0 else 20,
                        "step_size": eps if a == 0 else eps / 4, "restarts": 1, "random_init": a == 1,
                        "eot": "bma", "k_attack": 20 if stochastic else 1, "k_eval": 100, "seed": 0}  # fmt: skip
                if eps == 0:
                    adv = dict(clean)
                else:
                    survive = rng.random(N) < np.exp(-eps * (8 + 4 * a) / (1 + m))
                    adv = _outcome(rng, N, 1.0, 0.3 + 2 * eps, 0.1 * m * (1 + eps))
                    adv["correct"] = clean["correct"] & survive
                w = worst.setdefault(eps, dict(adv))
                w["correct"] = w["correct"] & adv["correct"]
                for which, out in (("clean", clean), ("adversarial", adv)):
                    values = {"accuracy": out["correct"].mean(), "nll": float(1 - out["correct"].mean()),
                              "entropy": out["entropy"].mean(), "mutual_information": out["mi"].mean()}  # fmt: skip
                    if which == "adversarial":
                        values |= {"max_perturbation": eps, "seconds": 0.5 + eps}
                    rows += [
                        {**base, "input": which, "metric": k, "value": float(v)} for k, v in values.items()
                    ]
                frame = {"model": model, "attack": attack, "norm": "linf", "eps": eps, "k_eval": 100, "seed": 0,
                         "index": np.arange(N), "clean_correct": clean["correct"], "adv_correct": adv["correct"],
                         "clean_entropy": clean["entropy"], "adv_entropy": adv["entropy"],
                         "clean_mi": clean["mi"], "adv_mi": adv["mi"], "perturbation": eps}  # fmt: skip
                if confidence:
                    frame["clean_confidence"] = conf
                example_frames.append(pd.DataFrame(frame))
        for eps, w in worst.items():
            base = {**rows[-1], "attack": "worst-case", "eps": eps, "steps": np.nan, "step_size": np.nan,
                    "restarts": np.nan, "random_init": None}  # fmt: skip
            for which, out in (("clean", clean), ("adversarial", w)):
                rows.append(
                    {**base, "input": which, "metric": "accuracy", "value": float(out["correct"].mean())}
                )
    results = pd.DataFrame(rows)
    ex = pd.concat(example_frames, ignore_index=True) if examples else None
    info = {"command": "sweep", "device": "cpu", "models": [{"name": m} for m in models], **(meta or {})}
    return write_report(results, info, root, run_id, ex)


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def page(fixture_run: Path) -> Path:
    return build(fixture_run)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".partial")]


# ---------------------------------------------------------------- rendering


def test_report_renders_every_section(fixture_run: Path, page: Path) -> None:
    assert page == fixture_run / INDEX
    text = page.read_text(encoding="utf-8")
    for model in ("det", "mcd", "bbh"):
        assert f"{model}" in text
    for heading in ("Robust accuracy vs ε", "Worst case over attacks", "Predictive entropy and mutual information",
                    "Adversarial detection AUROC", "Reliability per model", "Numbers", "Settings", "Seeds",
                    "Environment (meta.json)"):  # fmt: skip
        assert heading in text, heading
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 5
    names = ("robust_accuracy", "worst_case", "uncertainty", "detection_auroc", "reliability")
    for name in names:
        for suffix in ("png", "svg"):
            assert (fixture_run / FIGURES / f"{name}.{suffix}").stat().st_size > 1000
    # Self-contained: nothing is fetched, and the page says so to the browser.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "<link" not in text
    assert "default-src 'none'" in text
    assert "per-example worst case" in text  # the fixture records one, and the report prefers it
    assert _leftovers(fixture_run) == []


def test_report_without_examples_warns_and_still_renders(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det", "mcd"), examples=False)
    text = build(run).read_text(encoding="utf-8")
    assert "no per-example table" in text
    assert "Adversarial detection AUROC" not in text
    assert len(re.findall(r"<img ", text)) == 3


def test_reliability_falls_back_to_entropy_bins(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("mcd",), confidence=False)
    text = build(run).read_text(encoding="utf-8")
    assert "has no &#39;clean_confidence&#39; column" in text
    assert "Reliability per model" in text


def test_report_to_another_path_and_csv_only(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det",))
    (run / RESULTS_PARQUET).unlink()  # a run written without pyarrow: CSV only
    out = build(run, tmp_path / "elsewhere" / "page.html")
    assert out == tmp_path / "elsewhere" / "page.html" and out.is_file()
    assert (tmp_path / "elsewhere" / FIGURES / "robust_accuracy.svg").is_file()
    assert build(run, tmp_path / "elsewhere") == tmp_path / "elsewhere" / INDEX


def test_every_user_string_is_escaped(tmp_path: Path) -> None:
    meta = {"argv": ["--model", XSS], "data_source": f"/data/{XSS}", XSS: "key too"}
    run = make_run(tmp_path, (XSS, 'a"b&c'), meta=meta, run_id="xss")
    text = build(run).read_text(encoding="utf-8")
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a&#34;b&amp;c" in text
    assert 'a"b&c' not in text


def test_frames_clean_start_worst_case_fallback_and_panels() -> None:
    from robusthyper.report import data as d

    def row(model: str, attack: str, eps: float, which: str, value: float, k: int = 20) -> dict:
        return {"model": model, "attack": attack, "norm": "linf", "eot": "bma", "k_attack": k, "k_eval": 8,
                "seed": 0, "eps": eps, "input": which, "metric": "accuracy", "value": value}  # fmt: skip

    rows = [row("m", a, e, w, v) for a in ("pgd", "fgsm") for e in (0.1, 0.2) for w, v in
            (("clean", 0.9), ("adversarial", 0.5 - e - (a == "pgd") * 0.1))]  # fmt: skip
    results = pd.DataFrame(rows)
    acc = d.per_eps(results, "accuracy")
    # No eps 0 in the grid: each curve starts at the clean accuracy, once.
    assert acc[acc["eps"] == 0]["value"].tolist() == [0.9, 0.9]
    assert d.panel_order(results) == ["pgd", "fgsm"]
    worst = d.worst_case(results)
    assert worst["source"].eq("minimum over attacks").all()
    paper = results[results["attack"] == "fgsm"].assign(
        attack="paper-bbh-fgsm", protocol="paper-bbh", value=0.0
    )
    with_paper = pd.concat([results.assign(protocol="strong"), paper], ignore_index=True)
    pd.testing.assert_frame_equal(d.worst_case(with_paper), worst)  # the papers' protocols never count
    assert worst["value"].round(6).tolist() == [0.3, 0.2]
    # A second K_attack for the same model and attack splits the curves; a det net's K=1 does not.
    k_rows = [row("m", "pgd", 0.1, "adversarial", 0.4, k=5), row("det", "pgd", 0.1, "adversarial", 0.1, k=1)]
    assert set(d.add_panel(pd.DataFrame(rows + k_rows), pd.DataFrame(rows + k_rows))["panel"]) >= {
        "pgd · K=5",
        "pgd · K=20",
    }
    assert set(d.add_panel(results, pd.DataFrame(rows + k_rows[1:]))["panel"]) == {"pgd", "fgsm"}


def test_run_warnings_from_meta_are_shown(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det",), meta={"warnings": ["robust accuracy rises with eps for <pgd>"]})
    assert "robust accuracy rises with eps for &lt;pgd&gt;" in build(run).read_text(encoding="utf-8")


def test_sanity_flags_are_shown_at_the_top_escaped(tmp_path: Path) -> None:
    from robusthyper.sanity import Flag, Severity, flags_to_frame

    run = make_run(tmp_path, ("det",))
    text = build(run).read_text(encoding="utf-8")
    assert "Sanity flags" in text and "Not checked" in text  # a run that recorded no flags.csv

    flags_to_frame([]).to_csv(run / "flags.csv", index=False)
    text = build(run).read_text(encoding="utf-8")
    assert "No flags: clean bill." in text

    found = [Flag("not-near-zero", Severity.WARNING, "det", "pgd-40", 0.3, "still 0.5 at eps=0.3"),
             Flag("zero-gradients", Severity.ERROR, XSS, "gradient-check", 0.0, f"masked {XSS}")]  # fmt: skip
    flags_to_frame(found).to_csv(run / "flags.csv", index=False)
    text = build(run).read_text(encoding="utf-8")
    assert "clean bill" not in text and "<script" not in text
    top = text.index('id="flags"')
    assert top < text.index('id="warnings"') and top < text.index('id="table-1"')
    section = text[top : text.index('id="warnings"')]
    for column in ("code", "severity", "model", "attack", "eps", "message"):
        assert f">{column}</th>" in section
    assert "masked &lt;script&gt;alert(1)&lt;/script&gt;" in section and "still 0.5 at eps=0.3" in section
    assert section.index("zero-gradients") < section.index("not-near-zero")  # errors first

    (run / "flags.csv").write_text("nonsense\n1\n", encoding="utf-8")
    text = build(run).read_text(encoding="utf-8")
    assert "the sanity flags are not shown" in text


# ---------------------------------------------------------------- bad input


def test_missing_folder_and_no_results(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no results"):
        build(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        build(tmp_path / "a-file")


def test_empty_or_unreadable_results(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det",))
    (run / RESULTS_PARQUET).unlink()
    (run / RESULTS_CSV).write_text("model,attack,eps,input,metric,value\n")
    with pytest.raises(UserError, match="no rows"):
        build(run)
    (run / RESULTS_CSV).write_bytes(b"\x00\xff garbage")
    with pytest.raises(UserError):
        build(run)
    assert not (run / INDEX).exists() and not (run / FIGURES).exists()


def test_incompatible_schema(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det",))
    page = build(run)
    before = page.read_bytes()
    meta = json.loads((run / META).read_text())
    (run / META).write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(UserError, match="schema version 99"):
        build(run)
    (run / META).write_text(json.dumps(meta))
    old = pd.read_parquet(run / RESULTS_PARQUET).rename(columns={"metric": "measure", "value": "score"})
    old.to_parquet(run / RESULTS_PARQUET)
    with pytest.raises(UserError, match=r"lacks column\(s\) metric, value") as err:
        build(run)
    assert "\n" not in str(err.value)
    assert page.read_bytes() == before  # the previous page is untouched
    assert _leftovers(run) == []


def test_output_path_not_writable(tmp_path: Path) -> None:
    run = make_run(tmp_path, ("det",))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        build(run, blocker / "sub" / "index.html")
    assert not (run / INDEX).exists() and not (run / FIGURES).exists()
    if os.geteuid() != 0:  # root writes anywhere; the blocker case above covers it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot write"):
            build(run, locked)
        assert list(locked.iterdir()) == []


def test_cli_report(fixture_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from robusthyper.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(fixture_run), "--out", str(tmp_path / "r.html"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file() and str(tmp_path / "r.html") in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "does not exist" in result.output


# ---------------------------------------------------------------- headless Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

CHECK_SCRIPT = """<script>
(function () {
  var errors = [];
  var original = console.error;
  console.error = function () { errors.push(Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); };
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)) || 'resource'));
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    errors.push('csp: ' + e.blockedURI + ' ' + e.violatedDirective);
  });
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var out = {images: imgs.length, loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
               widths: imgs.map(function (i) { return i.naturalWidth; }), errors: errors};
    var pre = document.createElement('pre');
    pre.id = 'rh-check';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def find_chromium() -> str | None:
    candidates = [os.environ.get("ROBUSTHYPER_CHROMIUM", "")] + [
        shutil.which(n) or "" for n in CHROMIUM_NAMES
    ]
    candidates += ["/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90, check=False)


def _browser_check(binary: str, text: str, tmp_path: Path) -> tuple[dict, list[str]]:
    """Open a copy of `text` with the checker script; return its findings and Chromium's console errors."""
    assert text.count(CSP) == 1
    probe = text.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace(
        "</head>", CHECK_SCRIPT + "\n</head>"
    )
    probe_path = tmp_path / "probe.html"
    probe_path.write_text(probe, encoding="utf-8")
    done = _chromium(binary, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom",
                     probe_path.as_uri())  # fmt: skip
    found = re.search(r'<pre id="rh-check">(.*?)</pre>', done.stdout)
    if done.returncode != 0 and found is None:
        pytest.skip(f"Chromium at {binary} could not run here (exit {done.returncode}): {done.stderr[-300:]}")
    assert found, f"the checker script did not run; stderr: {done.stderr[-2000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                       .replace("&amp;", "&"))  # fmt: skip
    # Chromium logs every console message to stderr as INFO:CONSOLE whatever its level (console.* calls and
    # its own CSP violations, not every failed load: the checker's listeners catch those). The report has no
    # script and the checker logs nothing, so any console line at all is a failure.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return check, console


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set ROBUSTHYPER_CHROMIUM to its path)")
    return binary


def test_report_opens_in_headless_chromium(chromium: str, page: Path, tmp_path: Path) -> None:
    """The page itself has no script, so a copy gets one checker script (its CSP allows inline scripts and
    nothing else): it records console.error calls, resource load errors and CSP violations, and on `load`
    writes every image's naturalWidth into the DOM, which `--dump-dom` prints after `load` (with a virtual
    time budget so that nothing pending is cut short). Chromium's console log (stderr) must be empty too."""
    check, console = _browser_check(chromium, page.read_text(encoding="utf-8"), tmp_path)
    assert check["images"] == 5
    assert check["loaded"] == 5 and min(check["widths"]) > 0, check
    assert check["errors"] == [], check
    assert console == []


def test_browser_check_catches_broken_and_external_images(chromium: str, page: Path, tmp_path: Path) -> None:
    """The checker is not vacuous: a corrupt embedded image and an external one (blocked by the CSP) fail."""
    text = page.read_text(encoding="utf-8").replace(
        "</main>", '<img src="data:image/png;base64,AAAA"><img src="http://127.0.0.1:9/x.png"></main>'
    )
    check, console = _browser_check(chromium, text, tmp_path)
    assert check["images"] == 7 and check["loaded"] == 5, check
    assert any(e.startswith("csp: http://127.0.0.1:9/x.png") for e in check["errors"]), check
    assert any(e.startswith("error: data:image/png") for e in check["errors"]), check
    assert any("Content Security Policy" in line for line in console), console
