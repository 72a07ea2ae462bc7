"""benchmarks/suite_time.py, the suite's timing benchmark (issue 27): it runs the README's test
command for real (here on one small module), parses pytest's summary and appends a CSV row that
names the machine."""

import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("suite_time", ROOT / "benchmarks" / "suite_time.py")
suite_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite_time)


def test_a_timed_run_appends_a_row_with_the_machine_and_pytest_counts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SX_TEST_WORKERS", "0")  # pytest in one process: the timing is not what is checked here
    results = tmp_path / "runs.csv"
    module = "tests/test_core_stats.py"
    assert suite_time.main(["--skip-gemm", "--results", str(results), "--label", "check", "--", module, "-p", "no:cacheprovider"]) == 0
    # a run that fails is recorded as failed, and the exit code passed on
    assert suite_time.main(["--skip-gemm", "--results", str(results), "--", module, "-k", "no_such_test_anywhere"]) == 5
    ok, failed = list(csv.DictReader(results.open()))
    assert list(ok) == suite_time.FIELDS
    assert ok["command"] == f"bash scripts/test.sh {module} -p no:cacheprovider" and ok["what"] == "check"
    assert int(ok["passed"]) == (ROOT / module).read_text().count("\ndef test_") > 0
    assert 0 < float(ok["pytest_s"]) <= int(ok["wall_s"]) + 1
    assert " cores, " in ok["machine"] and "AVX" in ok["machine"]
    assert ok["cores_busy"].endswith("%") and ok["commit"] and ok["workers"] == "0"
    assert failed["what"] == "FAILED (exit 5)" and failed["passed"] == ""
    assert "| `bash scripts/test.sh tests/test_core_stats.py -p no:cacheprovider` |" in capsys.readouterr().out
