"""Tests of robusthyper.report: the page renders from a schema-true fixture run (written with the real
`robusthyper.run` writer), escapes every user string, rejects bad input without writing anything, and
opens in headless Chromium with every image loaded and no console errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robusthyper.errors import UserError
from robusthyper.report import FIGURES, INDEX, build
from robusthyper.run import read_run, run_meta, write_run
from robusthyper.run.schema import META, RESULTS_CSV, RESULTS_PARQUET

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


def _cells(eot_ks: tuple[int, ...], adaptive: bool, paper: bool) -> list[tuple[str, int, int, tuple, str]]:
    """(attack label, steps, K_attack, eps grid, protocol) of a synthetic run, in the sweep's order."""
    cells = [("fgsm", 1, 20, EPS, "strong"), ("pgd", 20, 20, EPS, "strong")]
    cells += [("pgd", 20, k, (0.1,), "strong") for k in eot_ks]
    if adaptive:
        cells.append(("pgd-adaptive", 20, 20, EPS[1:], "strong"))
    if paper:
        cells += [
            ("paper-bhn-fgsm", 1, 1, EPS[2:], "paper-bhn"),
            ("paper-bbh-fgsm", 1, 1, EPS[2:], "paper-bbh"),
        ]
    return cells


def make_run(
    root: Path,
    models: tuple[str, ...] | list[str] = ("det", "mcd", "bbh"),
    *,
    examples: bool = True,
    confidence: bool = True,
    run_id: str = "fixture",
    meta: dict | None = None,
    eot_ks: tuple[int, ...] = (),
    adaptive: bool = False,
    paper: bool = False,
) -> Path:
    """A synthetic run with the tables `robusthyper.evaluate.run` produces (same columns, per-example
    outcomes that aggregate to the tidy rows, a per-example worst case over the strong attacks), written with
    `robusthyper.run.write_run`. Options add what a suite with the honest-evaluation checks records:
    `eot_ks` extra K_attack of PGD at eps 0.1 (a deterministic model records K_attack = 1 for each, as
    `robusthyper.evaluate` does), `adaptive` pgd-adaptive (which lowers MI), `paper` both papers' protocols
    (weak: more accuracy) at eps 0.1-0.3."""
    rng = np.random.default_rng(0)
    rows, example_frames = [], []
    for m, model in enumerate(models):
        stochastic = m > 0
        clean = {"correct": rng.random(N) < 0.95, "entropy": rng.gamma(2.0, 0.05, N),
                 "mi": rng.gamma(2.0, 0.02, N) if stochastic else np.zeros(N)}  # fmt: skip
        conf = np.clip(np.where(clean["correct"], rng.beta(9, 1, N), rng.beta(3, 3, N)), 1e-3, 1)
        worst: dict[float, dict[str, np.ndarray]] = {}
        for attack, steps, k, grid, protocol in _cells(eot_ks, adaptive, paper):
            a = {"fgsm": 0, "pgd": 1, "pgd-adaptive": 1}.get(attack, -0.5)
            for eps in grid:
                base = {"model": model, "posterior": "det" if not stochastic else model, "dataset": "mnist5k",
                        "n": N, "attack": attack, "norm": "linf", "eps": eps, "steps": steps,
                        "step_size": eps if steps == 1 else eps / 4, "restarts": 1, "random_init": steps > 1,
                        "eot": "bma", "k_attack": k if stochastic else 1, "k_eval": 100, "seed": 0,
                        "protocol": protocol, "family": attack}  # fmt: skip
                if eps == 0:
                    adv = dict(clean)
                else:
                    strength = (8 + 4 * a) * (1 + (2 / k if stochastic and attack == "pgd" else 0) * -0.5)
                    survive = rng.random(N) < np.exp(-eps * strength / (1 + m))
                    mi_scale = 0.02 * m if attack == "pgd-adaptive" else 0.1 * m * (1 + eps)
                    adv = _outcome(rng, N, 1.0, 0.3 + 2 * eps, mi_scale)
                    adv["correct"] = clean["correct"] & survive
                if protocol == "strong":
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
                frame = {"model": model, "attack": attack, "family": attack, "norm": "linf", "eps": eps,
                         "k_attack": base["k_attack"], "protocol": protocol, "k_eval": 100, "seed": 0,
                         "index": np.arange(N), "clean_correct": clean["correct"], "adv_correct": adv["correct"],
                         "clean_entropy": clean["entropy"], "adv_entropy": adv["entropy"],
                         "clean_mi": clean["mi"], "adv_mi": adv["mi"], "perturbation": eps}  # fmt: skip
                if confidence:
                    frame["clean_confidence"] = conf
                example_frames.append(pd.DataFrame(frame))
        for eps, w in worst.items():
            base = {**rows[-1], "attack": "worst-case", "family": "worst-case", "eps": eps, "steps": np.nan, "step_size": np.nan,
                    "restarts": np.nan, "random_init": None, "protocol": "strong",
                    "k_attack": max((c[2] for c in _cells(eot_ks, adaptive, False)), default=20)
                    if stochastic else 1}  # fmt: skip
            for which, out in (("clean", clean), ("adversarial", w)):
                rows.append(
                    {**base, "input": which, "metric": "accuracy", "value": float(out["correct"].mean())}
                )
    results = pd.DataFrame(rows)
    ex = pd.concat(example_frames, ignore_index=True) if examples else None
    info = {"command": "sweep", "device": "cpu", "models": [{"name": m} for m in models], **(meta or {})}
    folder = Path(root) / run_id
    assert not folder.exists()
    return write_run(folder, results, run_meta(run_id, **info), ex)


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


def test_render_is_a_function_of_the_run_alone(fixture_run: Path, page: Path) -> None:
    """The page is computed from a `Run` in memory (no folder needed); `build` only reads and writes."""
    from robusthyper.report import render

    run = read_run(fixture_run)
    run.folder = None
    rendered = render(run, title="in memory")
    assert len(rendered.figures) == 5 and "<title>in memory</title>" in rendered.html
    ours = re.findall(r'<img src="data:image/png;base64,', rendered.html)
    assert len(ours) == len(re.findall(r'<img src="data:image/png;base64,', page.read_text(encoding="utf-8")))


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
    assert top < text.index('id="warnings"') and top < text.index('id="robust_accuracy"')
    section = text[top : text.index('id="warnings"')]
    for column in ("code", "severity", "model", "attack", "eps", "message"):
        assert f">{column}</th>" in section
    assert "masked &lt;script&gt;alert(1)&lt;/script&gt;" in section and "still 0.5 at eps=0.3" in section
    assert section.index("zero-gradients") < section.index("not-near-zero")  # errors first

    (run / "flags.csv").write_text("nonsense\n1\n", encoding="utf-8")
    text = build(run).read_text(encoding="utf-8")
    assert "the sanity flags are not shown" in text


# ---------------------------------------------------------------- honest evaluation: EOT, adaptive, papers

HONEST = ("eot_convergence", "detection_aware", "paper_vs_strong")


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with an EOT study (PGD at eps 0.1 with K 1, 5, 20, 50), adaptive PGD and both paper protocols."""
    return make_run(tmp_path_factory.mktemp("honest"), eot_ks=(1, 5, 50), adaptive=True, paper=True)


@pytest.fixture(scope="module")
def honest_page(honest_run: Path) -> Path:
    return build(honest_run)


class _Tables(HTMLParser):
    """Every <table> of an HTML fragment as a list of rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _section(text: str, section_id: str) -> str:
    start = text.index(f'<h2 id="{section_id}">')
    return text[start : text.index("<h2 ", start + 4)]


def _page_table(text: str, section_id: str) -> pd.DataFrame:
    parser = _Tables()
    parser.feed(_section(text, section_id))
    header, *rows = parser.tables[0]
    return pd.DataFrame(rows, columns=header)


def _nav(text: str) -> list[str]:
    return re.findall(r'<a href="#([^"]+)">', text[text.index("<nav>") : text.index("</nav>")])


def _cell(value: float) -> str:
    from robusthyper.report.html import cell

    return cell(float(value))


def test_honest_sections_render_once_each(honest_run: Path, honest_page: Path) -> None:
    text = honest_page.read_text(encoding="utf-8")
    nav = _nav(text)
    assert len(nav) == len(set(nav))  # every section listed once (the worst case used to appear twice)
    for section in (*HONEST, "robust_accuracy", "worst_case", "numbers"):
        assert nav.count(section) == 1 and text.count(f'<h2 id="{section}">') == 1, section
    assert re.findall(r"<a [^>]*>Worst case over attacks</a>", text) == [
        '<a href="#worst_case">Worst case over attacks</a>'
    ]
    order = [text.index(f'<h2 id="{s}">') for s in ("flags", "worst_case", *HONEST, "numbers")]
    assert order == sorted(order)
    for name in HONEST:
        for suffix in ("png", "svg"):
            assert (honest_run / FIGURES / f"{name}.{suffix}").stat().st_size > 1000
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 8
    assert "overstate robustness" in _section(text, "eot_convergence")
    assert "5% of clean inputs" in _section(text, "detection_aware")
    assert "per-example worst case" in _section(text, "paper_vs_strong")
    assert _leftovers(honest_run) == []


def test_main_figures_leave_out_paper_protocols_and_eot_points(honest_run: Path) -> None:
    from robusthyper.report import data as d

    results = read_run(honest_run).results
    main = d.main_grid(results)
    assert not main["attack"].str.startswith("paper-").any()
    pgd = main[(main["attack"] == "pgd") & (main["model"] != "det")]
    assert set(pgd["k_attack"]) == {20}  # the study's K = 1, 5, 50 are points, not curves
    assert d.panel_order(main) == ["fgsm", "pgd", "pgd-adaptive"]
    det = main[(main["model"] == "det") & (main["attack"] == "pgd") & (main["eps"] == 0.1)]
    assert len(det) == len(det.drop_duplicates(["input", "metric"]))  # det's four K = 1 cells: kept once
    # The per-example rows behind the detection AUROC figure: PGD at eps 0.1 once per model (K = 20's).
    loaded = read_run(honest_run)
    examples = d.main_examples(loaded.examples, results)
    at = examples[(examples["attack"] == "pgd") & (examples["eps"] == 0.1)]
    assert at.groupby("model").size().eq(N).all() and not examples["attack"].str.startswith("paper-").any()
    # The numbers table keeps every row, the papers' included.
    assert {"paper-bhn-fgsm", "paper-bbh-fgsm"} <= set(d.numbers(results)["attack"])


def test_eot_section_numbers(honest_run: Path, honest_page: Path) -> None:
    from robusthyper.report import data as d
    from robusthyper.run.tables import wilson

    results = read_run(honest_run).results
    acc = results[(results["metric"] == "accuracy") & (results["input"] == "adversarial")
                  & (results["attack"] == "pgd") & (results["eps"] == 0.1)]  # fmt: skip
    study = d.eot_study(results)
    assert set(study["panel"]) == {"pgd at ε=0.1"}
    for model in ("mcd", "bbh"):
        by_hand = acc[acc["model"] == model].set_index("k_attack")["value"].sort_index()
        rows = study[study["model"] == model].set_index("k_attack")
        assert list(rows.index) == [1, 5, 20, 50]
        assert rows["value"].tolist() == pytest.approx(by_hand.tolist())
        for k, row in rows.iterrows():
            assert (row["lo"], row["hi"]) == pytest.approx(wilson(round(by_hand[k] * N), N))
    assert study[study["model"] == "det"]["n_k"].tolist() == [1]  # a flat reference line
    table = _page_table(honest_page.read_text(encoding="utf-8"), "eot_convergence")
    assert list(table.columns) == ["model", "attack, ε", "n", "K=1", "K=5", "K=20", "K=50",
                                   "largest − smallest K", "last step"]  # fmt: skip
    mcd = table[table["model"] == "mcd"].iloc[0]
    by_hand = acc[acc["model"] == "mcd"].set_index("k_attack")["value"]
    assert mcd["K=5"] == _cell(by_hand[5])
    assert mcd["last step"] == _cell(by_hand[50] - by_hand[20])
    assert mcd["largest − smallest K"] == _cell(by_hand[50] - by_hand[1])


def _brute_force_defended(clean_score: np.ndarray, adv_score: np.ndarray, correct: np.ndarray) -> float:
    """Recount detection-aware accuracy: flag above the clean score that leaves 5% of clean inputs above."""
    ranked = np.sort(clean_score)
    threshold = ranked[len(ranked) - 1 - math.floor(0.05 * len(ranked))]
    assert (clean_score > threshold).mean() <= 0.05
    return float(np.mean(correct.astype(bool) | (adv_score > threshold)))


def test_detection_aware_numbers_equal_a_brute_force_recount(tmp_path: Path) -> None:
    """The plain PGD beside the adaptive attack is the K = 20 cell, not a mixture with the EOT study's K = 1,
    5, 50 cells at the same eps."""
    from robusthyper.report import data as d

    run = make_run(tmp_path, ("det", "mcd"), eot_ks=(1, 5, 50), adaptive=True)
    raw = pd.read_parquet(run / "examples.parquet")
    text = build(run).read_text(encoding="utf-8")
    loaded = read_run(run)
    assert loaded.notes == [] and loaded.examples is not None
    aware = d.detection_aware(loaded.examples)
    table = _page_table(text, "detection_aware")
    for model in ("det", "mcd"):
        plain = raw[(raw["model"] == model) & (raw["attack"] == "pgd") & (raw["eps"] == 0.1)].iloc[
            :N
        ]  # K = 20
        adaptive = raw[(raw["model"] == model) & (raw["attack"] == "pgd-adaptive") & (raw["eps"] == 0.1)]
        for score, column in (("MI", "mi"), ("entropy", "entropy")):
            expected = {}
            for kind, rows in (("pgd", plain), ("adaptive", adaptive)):
                expected[kind] = _brute_force_defended(rows[f"clean_{column}"].to_numpy(),
                                                       rows[f"adv_{column}"].to_numpy(),
                                                       rows["adv_correct"].to_numpy())  # fmt: skip
                got = aware[(aware["model"] == model) & (aware["eps"] == 0.1) & (aware["score"] == score)
                            & (aware["kind"] == kind)]  # fmt: skip
                assert len(got) == 1
                assert got["detection_aware_acc"].item() == pytest.approx(expected[kind])
                assert got["robust_acc"].item() == pytest.approx(rows["adv_correct"].mean())
            shown = table[(table["model"] == model) & (table["ε"] == "0.1") & (table["score"] == score)]
            assert len(shown) == 1
            assert shown["detection-aware acc (PGD)"].item() == _cell(expected["pgd"])
            assert shown["Δ detection-aware acc (adaptive − PGD)"].item() == _cell(
                expected["adaptive"] - expected["pgd"]
            )
            # Worst of both, per example: defended only when defended against each attack (own threshold).
            defended = np.ones(N, bool)
            for rows in (plain, adaptive):
                ranked = np.sort(rows[f"clean_{column}"].to_numpy())
                threshold = ranked[len(ranked) - 1 - math.floor(0.05 * len(ranked))]
                hit = rows.sort_values("index")[f"adv_{column}"].to_numpy() > threshold
                defended &= rows.sort_values("index")["adv_correct"].to_numpy().astype(bool) | hit
            worst = aware[(aware["model"] == model) & (aware["eps"] == 0.1) & (aware["score"] == score)
                          & (aware["kind"] == "worst")]  # fmt: skip
            assert worst["detection_aware_acc"].item() == pytest.approx(defended.mean())
            assert worst["detection_aware_acc"].item() <= min(expected.values()) + 1e-12
            assert shown["detection-aware acc (worst of both)"].item() == _cell(defended.mean())
    assert aware[aware["model"] == "mcd"]["k_attack"].eq(20).all()


def test_paper_rows_beside_the_strong_protocol(honest_run: Path, honest_page: Path) -> None:
    from robusthyper.report import data as d

    results = read_run(honest_run).results
    adv = results[(results["metric"] == "accuracy") & (results["input"] == "adversarial")]
    frame = d.paper_vs_strong(results)
    assert set(frame["protocol"]) == {"paper-bhn", "paper-bbh"} and set(frame["eps"]) == {0.1, 0.2, 0.3}
    assert len(frame) == 3 * 2 * 3  # models x protocols x eps
    table = _page_table(honest_page.read_text(encoding="utf-8"), "paper_vs_strong")
    assert len(table) == len(frame)
    for _, row in frame.iterrows():
        at = (adv["model"] == row["model"]) & (adv["eps"] == row["eps"])
        paper = adv[at & (adv["attack"] == row["attack"])]["value"].item()
        strong = adv[at & (adv["attack"] == "worst-case")]["value"].item()
        assert (row["paper"], row["strong"]) == pytest.approx((paper, strong))
        assert row["difference"] == pytest.approx(paper - strong)
        shown = table[(table["model"] == row["model"]) & (table["paper attack"] == row["attack"])
                      & (table["ε"] == _cell(row["eps"]))]  # fmt: skip
        assert shown["overstatement (paper − strong)"].item() == _cell(paper - strong)
        assert shown["robust acc (strong: worst case)"].item() == _cell(strong)
    # The papers' rows never lower the worst case (they are weak and unclipped by design).
    strong_only = results[~results["attack"].str.startswith("paper-")]
    pd.testing.assert_frame_equal(d.worst_case(results), d.worst_case(strong_only))


def test_honest_sections_absent_without_their_data(tmp_path: Path, page: Path) -> None:
    text = page.read_text(encoding="utf-8")  # the plain fixture: one K, no adaptive attack, no paper rows
    for section in HONEST:
        assert f'id="{section}"' not in text and f'href="#{section}"' not in text
    # An EOT study without per-example rows: the EOT section, not the detection-aware one (needs examples).
    run = make_run(tmp_path, ("det", "mcd"), examples=False, eot_ks=(1, 5), adaptive=True)
    text = build(run).read_text(encoding="utf-8")
    assert 'id="eot_convergence"' in text and 'id="detection_aware"' not in text
    assert 'id="paper_vs_strong"' not in text


def test_a_version_1_run_without_k_attack_per_example(tmp_path: Path) -> None:
    """Runs of schema version 1 recorded no k_attack per example; several K_attack of one attack cannot be
    told apart, so the tables drawn from the examples are left out and the page says why."""
    run = make_run(tmp_path, ("det", "mcd"), eot_ks=(1, 5), adaptive=True)
    raw = pd.read_parquet(run / "examples.parquet").drop(columns=["k_attack", "family"])
    raw.to_parquet(run / "examples.parquet", index=False)
    meta = json.loads((run / META).read_text())
    (run / META).write_text(json.dumps({**meta, "schema_version": 1}))
    text = build(run).read_text(encoding="utf-8")
    assert "records no k_attack per example" in _section(text, "warnings")
    assert 'id="detection_aware"' not in text and 'id="eot_convergence"' in text


def test_flags_are_not_repeated_as_warnings(tmp_path: Path) -> None:
    from robusthyper.sanity import Flag, Severity, flags_to_frame

    flag = Flag("eot-not-converged", Severity.WARNING, "mcd", "pgd-40", 0.1, "robust accuracy falls <fast>")
    other = "OOD detection vs fashion-mnist skipped: not installed"
    run = make_run(tmp_path, ("mcd",), meta={"warnings": [other, str(flag)]})
    flags_to_frame([flag]).to_csv(run / "flags.csv", index=False)
    text = build(run).read_text(encoding="utf-8")
    assert text.count("robust accuracy falls &lt;fast&gt;") == 1
    assert "robust accuracy falls &lt;fast&gt;" in _section(text, "flags")
    assert other in _section(text, "warnings")


def test_sweep_with_a_k_attack_list_end_to_end(tmp_path: Path, small_mnist) -> None:
    """A tiny MC-dropout MLP through a tiny suite with an EOT study that overlaps the main grid, adaptive PGD
    and both paper protocols: no cell runs twice, no row is duplicated, and the report shows every section."""
    from conftest import tiny_recipe

    from robusthyper import store, sweep
    from robusthyper.train import fit

    recipe = tiny_recipe("mcd", epochs=1, val_fraction=0.0).model_copy(update={"name": "tiny-mcd"})
    store.save(fit(recipe, small_mnist, progress=False).posterior, recipe, {}, tmp_path / "store")
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        'n = 12\n[[attacks]]\nattack = "fgsm"\neps = [0, 0.1]\nk_attack = 2\nk_eval = 3\n'
        '[[attacks]]\nattack = "pgd"\nsteps = 2\neps = [0, 0.1]\nk_attack = 2\nk_eval = 3\n'
        '[[attacks]]\nattack = "pgd"\nsteps = 2\neps = 0.1\nk_attack = [1, 2, 4]\nk_eval = 3\n'
        '[[attacks]]\nattack = "pgd-adaptive"\nsteps = 2\neps = 0.1\nk_attack = 2\nk_eval = 3\n'
        '[[attacks]]\nattack = "paper-bhn-fgsm"\neps = 0.1\nk_eval = 3\n'
        '[[attacks]]\nattack = "paper-bbh-fgsm"\neps = 0.1\nsamples_averaged = 3\nk_eval = 3\n'
    )
    loaded = sweep.load_suite(str(suite))
    assert len(loaded.specs) == 2 + 2 + 2 + 1 + 2  # pgd eps 0.1 K 2 once
    done = sweep.run_sweep(tmp_path / "run", ["tiny-mcd"], loaded.specs, store=tmp_path / "store", n=loaded.n,
                           batch_size=12, progress=False, ood=False)  # fmt: skip
    assert done.computed == len(loaded.specs) + 1  # and the gradient probe
    keys = ["model", "attack", "eps", "k_attack", "input", "metric"]
    assert not done.results.duplicated(keys).any()
    pgd = done.results[(done.results["attack"] == "pgd-2") & (done.results["eps"] == 0.1)
                       & (done.results["metric"] == "accuracy") & (done.results["input"] == "adversarial")]  # fmt: skip
    assert sorted(pgd["k_attack"]) == [1, 2, 4]
    assert done.report is not None
    text = done.report.read_text(encoding="utf-8")
    for section in HONEST:
        assert f'<h2 id="{section}">' in text, section
    nav = _nav(text)
    assert len(nav) == len(set(nav))


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


def test_honest_report_opens_in_headless_chromium(chromium: str, honest_page: Path, tmp_path: Path) -> None:
    """The page with the EOT, detection-aware and paper-protocol figures loads every image cleanly too."""
    check, console = _browser_check(chromium, honest_page.read_text(encoding="utf-8"), tmp_path)
    assert check["images"] == 8 and check["loaded"] == 8 and min(check["widths"]) > 0, check
    assert check["errors"] == [] and console == [], (check, console)
