"""The training-loops section renders from results records only: one card per adapter in the report's order, one row
per idiom, a row whose observation differs from its declaration marked."""

import json

from bnsuite.reports import loops
from bnsuite.reports.render import render


def _row(adapter, idiom, ok, observed):
    return {"schema": 1, "kind": "matrix", "name": loops.NAME, "adapter": adapter, "device": "cpu",
            "loop": "weight averaging",
            "idiom": idiom, "declared": "statistics: averaged", "observed": observed, "source": "swa_utils.py: x",
            "max err / bound": "1e-08 / 1e-06", "as declared": ok, "statistics vs averaged ones (max abs)": "0.1"}


def test_tables_group_by_adapter_and_mark_mismatches():
    out = loops.tables([_row("keras", "ema", True, "statistics: live"), _row("torch", "swa", False, "stale")],
                       {"torch": 0, "keras": 1})
    assert [a["adapter"] for a in out] == ["torch", "keras"]
    row = out[0]["rows"][0]
    assert not row["ok"] and row["observed"] == "stale" and "swa_utils.py: x" in row["title"]
    assert "statistics vs averaged ones (max abs): 0.1" in row["measured"]


def test_report_has_the_section(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in [_row("torch", "swa_use_buffers_true", False, "stale")]))
    out = tmp_path / "index.html"
    render([str(results)], str(out))
    html = out.read_text()
    section = html[html.index('<section id="training-loops"'):]
    section = section[:section.index("</section>")]
    assert "<b>torch</b>" in section and "stale" in section and '<span class="bad">✗ </span>' in section
