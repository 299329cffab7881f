"""The results file: appended and flushed per record; corrupt lines cost only themselves."""

from bnsuite.reports.results import ResultsWriter, read_all


def test_records_survive_a_corrupt_line(tmp_path):
    p = tmp_path / "r.jsonl"
    w = ResultsWriter(str(p))
    w.write("check", property="a", passed=True, value=float("nan"))
    with open(p, "a") as fh:
        fh.write("{not json\n")
    w.write("check", property="b", passed=False)
    w.close()
    records, errors = read_all([str(p)])
    assert [r["property"] for r in records] == ["a", "b"]
    assert records[0]["value"] == "nan"
    assert errors == [f"{p}:2: not a JSON record (Expecting property name enclosed in double quotes)"]


def test_missing_file_is_one_error(tmp_path):
    records, errors = read_all([str(tmp_path / "nope.jsonl")])
    assert records == [] and len(errors) == 1 and "cannot open results file" in errors[0]
