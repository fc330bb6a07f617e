"""``attnkit report WORK_DIR``: one self-contained HTML page of a training run (curves, metric tables, config, best
and worst val predictions, the attention gallery of ``attnkit explain``). See docs/report.md."""
from .build import REPORT_FILE, TRAINING_DEFAULTS, report_options, write_report
from .data import RunData, read_run

__all__ = ['write_report', 'read_run', 'RunData', 'report_options', 'REPORT_FILE', 'TRAINING_DEFAULTS']
