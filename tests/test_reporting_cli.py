"""`rmaunet report` and `jobs/report.py`: store folder, Parquet or CSV in; report folders out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_reporting_support import result_row, table_rows

from rmaunet.cli import main
from rmaunet.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A results store with two studies written row by row, as the study engine does."""
    root = tmp_path / "store"
    results = ResultsStore(root)
    for frame in (
        table_rows([[0.60, 0.61], [0.66, 0.67]], ["CE", "Focal & IoU"], study="paper_table4_losses", seeds=(0, 1)),
        table_rows([[0.70], [0.72]], ["None", "0.95"], study="paper_table9_threshold", kind="threshold", seeds=(0,)),
    ):
        for record in frame.to_dict("records"):
            results.write_row(record)
    return root


def _data_lines(markdown: str) -> list[str]:
    return [
        line
        for line in markdown.splitlines()
        if line.startswith("| ") and not line.startswith("| Configuration") and not line.startswith("| Threshold")
    ]


def test_report_writes_one_folder_per_study(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every study in the store gets its tables, figures and index; stdout names each index page.
    out = tmp_path / "reports"
    assert main(["report", str(store), "--reports", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    for study in ("paper_table4_losses", "paper_table9_threshold"):
        assert {"table.md", "table.tex", "README.md"} <= {p.name for p in (out / study).iterdir()}
        assert str(out / study / "README.md") in printed
    table4 = (out / "paper_table4_losses" / "table.md").read_text()
    assert _data_lines(table4) == [
        "| CE | 60.50 ± 0.71 | 53.50 ± 0.71 | — | — | 2 | baseline |",
        # Both seeds differ from the baseline by exactly +6: no spread to test, so no p.
        "| Focal & IoU | **66.50 ± 0.71** | **59.50 ± 0.71** | +6.00 | +6.00 | 2 | no variance |",
    ]


def test_study_and_spec_select_one_study(store: Path, tmp_path: Path) -> None:
    # --study, or the name in --spec, limits the report to that study; the spec's report: applies.
    spec = tmp_path / "t9.yaml"
    spec.write_text("name: paper_table9_threshold\nkind: threshold\nreport:\n  metrics: [f1]\n")
    out = tmp_path / "reports"
    assert main(["report", str(store), "--spec", str(spec), "--reports", str(out), "--no-figures"]) == 0
    assert [p.name for p in out.iterdir()] == ["paper_table9_threshold"]
    assert "| Threshold | F1 | Δ F1 | n |" in (out / "paper_table9_threshold" / "table.md").read_text()


def test_parquet_export_and_hand_typed_csv_render_like_the_store(store: Path, tmp_path: Path) -> None:
    # A results table file gives the same table as the store it came from; a CSV needs only row + metrics.
    exported = ResultsStore(store).export(tmp_path / "all.parquet", "paper_table4_losses")
    assert (
        main(["report", str(store), "--study", "paper_table4_losses", "--reports", str(tmp_path / "a"), "--no-figures"])
        == 0
    )
    assert main(["report", str(exported), "--reports", str(tmp_path / "b"), "--no-figures"]) == 0
    a = (tmp_path / "a" / "paper_table4_losses" / "table.md").read_text()
    assert (tmp_path / "b" / "paper_table4_losses" / "table.md").read_text() == a
    csv = tmp_path / "table4_paper.csv"
    csv.write_text(
        "row,test_f1,test_miou\nU-Net & Cross Entropy (baseline),0.6783,0.6001\nU-Net & Focal Loss,0.6828,0.6037\n"
    )
    assert main(["report", str(csv), "--reports", str(tmp_path / "c"), "--format", "markdown", "--no-figures"]) == 0
    typed = (tmp_path / "c" / "table4_paper" / "table.md").read_text()
    assert "| U-Net & Focal Loss | **68.28** | **60.37** | +0.45 | +0.36 | 1 |" in typed
    assert not (tmp_path / "c" / "table4_paper" / "table.tex").exists()


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda d: d / "missing", [], "no such results store"),
        (lambda d: _write(d / "pct.csv", "row,test_f1\nA,67.83\n"), [], "test_f1 has values above 1"),
        (lambda d: _write(d / "nolabel.csv", "test_f1\n0.6\n"), [], "no `row` column"),
        (lambda d: _write(d / "ok.csv", "row,test_f1\nA,0.6\n"), ["--metrics", "f1,dice"], "unknown"),
        (lambda d: _write(d / "ok.csv", "row,test_f1\nA,0.6\n"), ["--baseline", "B"], "not a row"),
        (lambda d: _write(d / "notes.txt", "hello"), [], "not a results store folder"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_input, extra: list[str], message: str
) -> None:
    # Bad input is one line on stderr and exit status 2, never a traceback.
    path = make_input(tmp_path)
    assert main(["report", str(path), "--reports", str(tmp_path / "out"), "--no-figures", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_job_entry_point_runs_without_the_training_stack(store: Path, tmp_path: Path) -> None:
    # `python jobs/report.py` (what `ray job submit` runs) reports without importing TensorFlow or Ray.
    out = tmp_path / "reports"
    probe = (
        "import runpy, sys; sys.argv = ['jobs/report.py', *sys.argv[1:]]\n"
        "try:\n    runpy.run_path('jobs/report.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            str(store),
            "--study",
            "paper_table4_losses",
            "--reports",
            str(out),
            "--no-figures",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (out / "paper_table4_losses" / "table.tex").is_file()
    bad = subprocess.run(
        [sys.executable, "jobs/report.py", str(tmp_path / "nowhere")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no such results store" in bad.stderr


def test_paper_table9_typed_in_as_csv_renders_with_its_best_row(tmp_path: Path) -> None:
    # The paper's own Table IX, typed in: "None" first, 0.95 bold (chosen on test, and the note says so).
    rows = [
        ("None", "None", 0.7242, 0.6388),
        ("0.4", 0.4, 0.7178, 0.6329),
        ("0.5", 0.5, 0.7242, 0.6388),
        ("0.9", 0.9, 0.7368, 0.6507),
        ("0.95", 0.95, 0.7463, 0.6597),
        ("0.99", 0.99, 0.7311, 0.6468),
    ]
    csv = _write(
        tmp_path / "table9.csv",
        "kind,row,threshold,test_f1,test_miou\n" + "".join(f"threshold,{r},{t},{f},{m}\n" for r, t, f, m in rows),
    )
    assert main(["report", str(csv), "--reports", str(tmp_path / "out"), "--no-figures"]) == 0
    text = (tmp_path / "out" / "table9" / "table.md").read_text()
    lines = _data_lines(text)
    assert [line.split(" | ")[0] for line in lines] == ["| None", "| 0.4", "| 0.5", "| 0.9", "| **0.95**", "| 0.99"]
    assert "| **0.95** | **74.63** | **65.97** | +2.21 | +2.09 | 1 |" in lines
    assert "No validation metrics were stored, so the choice was made on test." in text


def test_paper_table11_typed_in_with_published_references(tmp_path: Path) -> None:
    # Table XI from the paper's numbers: our rows per dataset, other papers' rows from --references, n/a blocks.
    csv = _write(
        tmp_path / "table11.csv",
        "row,cfg_dataset,cfg_task,test_f1,test_precision,test_recall,test_miou,test_det_f1,test_det_accuracy,test_det_precision,test_det_recall\n"
        "Our proposed RMAU-NET,landslide4sense,segmentation+detection,0.7690,0.7211,0.8238,0.6597,0.9823,0.9710,0.9858,0.9789\n"
        "Our proposed RMAU-NET,nepal,segmentation,0.6943,0.6212,0.7879,0.7688,,,,\n"
        "Our proposed RMAU-NET,bijie,segmentation+detection,0.7434,0.7454,0.7414,0.5733,0.9383,0.9663,0.9552,0.9221\n",
    )
    refs = _write(
        tmp_path / "refs.csv",
        "dataset,model,source,f1,precision,recall,det_accuracy\nNepal,U-Net,[38],67.00,61.00,74.00,\nBijie,Improved DDTL,[37],,,,96.03\n",
    )
    assert (
        main(["report", str(csv), "--references", str(refs), "--reports", str(tmp_path / "out"), "--no-figures"]) == 0
    )
    lines = [
        line for line in (tmp_path / "out" / "table11" / "table.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert lines[0].startswith("| Dataset | Model | Segmentation task: F1 |")
    assert lines[1:] == [
        "| Landslide4Sense | Our proposed RMAU-NET | 76.90 | 72.11 | 82.38 | 65.97 | 98.23 | 97.10 | 98.58 | 97.89 | 1 |",
        "| Nepal | U-Net \\[38\\] | 67.00 | 61.00 | 74.00 | n/a | n/a | n/a | n/a | n/a | published |",
        "|  | Our proposed RMAU-NET | 69.43 | 62.12 | 78.79 | 76.88 | n/a | n/a | n/a | n/a | 1 |",
        "| Bijie | Improved DDTL \\[37\\] | n/a | n/a | n/a | n/a | n/a | 96.03 | n/a | n/a | published |",
        "|  | Our proposed RMAU-NET | 74.34 | 74.54 | 74.14 | 57.33 | 93.83 | 96.63 | 95.52 | 92.21 | 1 |",
    ]


def test_csv_blank_study_and_status_cells_take_the_defaults(tmp_path: Path) -> None:
    # A hand-made table with some cells left blank keeps every row (study from the file name, status ok).
    csv = _write(tmp_path / "mixed.csv", "study,status,row,test_f1\nmixed,ok,A,0.6\n,,B,0.7\n")
    assert main(["report", str(csv), "--reports", str(tmp_path / "out"), "--no-figures"]) == 0
    text = (tmp_path / "out" / "mixed" / "table.md").read_text()
    assert "| B | **70.00** | +10.00 | 1 |" in text  # and no mIoU column of n/a


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_from_the_store_is_byte_identical_to_the_run_report(tmp_path: Path) -> None:
    # `study run --reports A` keeps its spec in the store and draws A/<study>/; `rmaunet report STORE
    # --reports B` later, with the spec's folder gone, draws B/<study>/ byte for byte the same: the
    # spec's caption, Table XI's published reference rows from its `report:` section, the smoke mark
    # and what --set / --seeds changed of the spec.
    from rmaunet.api import _spec_record
    from rmaunet.studies.spec import load_spec
    from rmaunet.study_cli import _summarise

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for name in ("paper_table11_datasets.yaml", "table11_references.csv"):
        (spec_dir / name).write_bytes((REPO / "search_spaces" / name).read_bytes())
    spec = load_spec(spec_dir / "paper_table11_datasets.yaml", smoke=True, overrides={"batch_size": 4}, seeds=[0, 1])
    store = tmp_path / "store"
    results = ResultsStore(store)
    results.write_spec(spec.name, _spec_record(spec, synthetic=True))  # what `study run` does before training
    for i, (row, dataset) in enumerate(zip(spec.rows, ("landslide4sense", "nepal", "bijie"))):
        for seed in spec.seeds:
            results.write_row(
                result_row(spec.name, "table", row.label, i, seed, 0.6 + i / 20 + seed / 100, cfg_dataset=dataset)
            )
    _summarise(spec, store, tmp_path / "run" / spec.name, started=0.0)  # what `study run --reports run` does after
    for path in spec_dir.iterdir():
        path.unlink()  # the report below can only read the store
    assert main(["report", str(store), "--reports", str(tmp_path / "later")]) == 0

    run, later = _files(tmp_path / "run" / spec.name), _files(tmp_path / "later" / spec.name)
    assert sorted(run) == sorted(later) and "table.tex" in run and "ablation.png" not in run
    differ = [name for name in run if run[name] != later[name]]
    assert not differ, f"differ: {differ}"
    table = run["table.md"].decode()
    assert "| Nepal | ResNet \\[38\\] | 60.00 | 55.00 | 65.00 | n/a |" in table
    assert table.startswith(
        "**Smoke run on synthetic data (--smoke: tiny model, few tiles, one epoch): a pipeline check, not a result; "
        "spec changed on the command line: batch\\_size=4; seeds 0, 1"
    )
    assert "spec changed on the command line: batch\\_size=4; seeds 0, 1" in run["table.tex"].decode()
    assert "RMAU-NET on Landslide4Sense, Nepal and Bijie" in table


def test_one_reports_flag_in_every_command_and_the_old_names_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --reports DIR puts each study in DIR/<study>/ for `report`, `study run` and `demo`; --out and
    # --report still parse, with a warning naming --reports (--report keeps its old meaning, DIR itself).
    from rmaunet.cli import build_parser
    from rmaunet.study_cli import _report_dir

    parser = build_parser()
    spec = str(REPO / "search_spaces" / "demo.yaml")
    run = parser.parse_args(["study", "run", spec, "--data", "d", "--storage", "s", "--reports", str(tmp_path)])
    assert _report_dir(run, "demo") == tmp_path / "demo"
    demo = parser.parse_args(["demo"])
    assert _report_dir(demo, "demo") == Path("reports") / "demo"
    assert parser.parse_args(["report", "s"]).reports == Path("reports")
    capsys.readouterr()
    old_run = parser.parse_args(["study", "run", spec, "--data", "d", "--storage", "s", "--report", str(tmp_path)])
    assert _report_dir(old_run, "demo") == tmp_path
    assert parser.parse_args(["report", "s", "--out", str(tmp_path)]).reports == tmp_path
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all("is deprecated, use --reports" in w for w in warnings)
