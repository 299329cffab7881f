"""How each group's run ended, from the runner's "group" records: the ones that did not run straight through."""

from __future__ import annotations


def unusual(group_records: list[dict]) -> list[dict]:
    """One entry per group resumed after crashed or hung cases, or cut short: {group, text}."""
    out = []
    for g in group_records:
        status, lost = g.get("status"), list(g.get("lost") or [])
        if status == "complete":
            continue
        cases = f"{len(lost)} case{'s' * (len(lost) != 1)} lost to a crash or hang ({', '.join(lost[:5])}" + \
            (f", and {len(lost) - 5} more)" if len(lost) > 5 else ")") if lost else ""
        if status == "cut short":
            text = f"CUT SHORT ({g.get('reason') or 'no reason recorded'}); its remaining cases never ran" + \
                (f"; {cases}" if cases else "")
        else:
            text = f"resumed after {cases}, each recorded as failed"
        out.append({"group": str(g.get("group")), "text": text})
    return out
