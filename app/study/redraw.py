"""Draw a written report's figures again from its report.json (after an upgrade of the figures):

    python -m app.study.redraw REPORT_DIR [REPORT_DIR ...]

Rewrites figures/NAME.{svg,png,pdf} and report.html; the numbers (report.json) are not touched."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .charts import make_figures
from .repro_charts import reproduction_figures
from .storage import write_report


def redraw(out_dir) -> Path:
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    figs = make_figures(report)
    if report.get("reproduction"):
        figs.update(reproduction_figures(report["reproduction"]))
    for old in (out / "figures").glob("*.svg"):
        old.unlink()  # a figure the new drawing no longer makes must not linger
    return write_report(out, report, figs)


def main(argv=None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    if not dirs:
        print("usage: python -m app.study.redraw REPORT_DIR [REPORT_DIR ...]", file=sys.stderr)
        return 2
    for d in dirs:
        if not (Path(d) / "report.json").is_file():
            print(f"ffnlens: {d} holds no report.json (a folder `ffnlens eval --report` wrote)", file=sys.stderr)
            return 2
        print(redraw(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
