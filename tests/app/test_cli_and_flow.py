import json
import subprocess
import sys

from fairsynth.app.cli import main


def test_audit_model_cli_json(tmp_path, capsys):
    out = tmp_path / "audit.json"
    rc = main(
        [
            "toyfaces",
            "audit-model",
            "--n",
            "8",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--json",
            "--reference",
            str(tmp_path / "none"),
            "--grid",
            str(tmp_path / "g.png"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 8 and set(report["attributes"]) == {"skin", "eyeglasses", "hair"}
    skin = report["attributes"]["skin"]
    assert abs(sum(skin["model"].values()) - 1) < 1e-9
    assert skin["reference"] == {"light": 0.8, "dark": 0.2}
    assert 0 <= report["confident_fraction"] <= 1
    assert (tmp_path / "g.png").is_file()
    # the file is a DVC metric: what the inputs decide; timings go beside it
    saved = json.loads(out.read_text())
    assert saved == {k: v for k, v in report.items() if k not in ("seconds_per_batch", "threads")}
    run = json.loads(out.with_name(out.name + ".run.json").read_text())
    assert run["seconds_per_batch"] == report["seconds_per_batch"]
    assert main(["toyfaces", "show-audit", str(out)]) == 0
    assert "largest |model - reference|" in capsys.readouterr().out


def test_cli_clear_error_for_missing_model(tmp_path, capsys):
    rc = main(["toyfaces", "audit-model", "--n", "2", "--model", str(tmp_path / "missing")])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_cli_rejects_non_positive_n():
    r = subprocess.run(
        [sys.executable, "-m", "fairsynth.app.cli", "toyfaces", "audit-model", "--n", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "positive" in r.stderr


def test_python_dash_m_fairsynth_is_the_command():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "fairsynth", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: fairsynth")
    bad = subprocess.run([sys.executable, "-m", "fairsynth", "weights", "check", "--params",
                          "/nonexistent.yaml"], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("fairsynth: error: ")
    assert "Traceback" not in bad.stderr
