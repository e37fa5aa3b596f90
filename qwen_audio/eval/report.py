"""An evaluation's report: JSON for programs, a markdown table for people."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .tasks import TaskScore

# How each metric is shown in the table: (title, scale, unit). Rates are stored as fractions.
SHOWN = {
    "wer": ("WER", 100, "%"), "cer": ("CER", 100, "%"), "wer_published": ("WER, published normaliser", 100, "%"),
    "cer_published": ("CER, published normaliser", 100, "%"), "bleu": ("BLEU", 1, ""),
    "accuracy": ("accuracy", 100, "%"), "mean_boundary_error_ms": ("mean boundary error", 1, " ms"),
}
ALSO = {"wer": ("wer_published",), "cer": ("cer_published",)}  # secondary rows of the table


@dataclass
class Report:
    """Scores of one model on one manifest."""

    model: str
    manifest: str
    results: str  # the batch results file the scores were computed from
    options: dict  # generation options
    seconds: float  # wall time, inference included
    tasks: dict[str, TaskScore] = field(default_factory=dict)
    skipped: int = 0  # manifest rows of other tasks

    def to_dict(self) -> dict:
        return {"model": self.model, "manifest": self.manifest, "results": self.results, "options": self.options,
                "seconds": self.seconds, "skipped": self.skipped,
                "tasks": {name: asdict(score) for name, score in self.tasks.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"

    def markdown(self) -> str:
        """One table: a line per task, group and metric."""
        lines = ["| task | group | rows | metric | value | failed rows |", "|---|---|---:|---|---:|---:|"]
        for name, score in self.tasks.items():
            for group, metrics in score.groups.items():
                main = metrics["metric"]
                for key in (main, *ALSO.get(main, ())):
                    title, scale, unit = SHOWN.get(key, (key, 1, ""))
                    value = metrics.get(key)
                    shown = "n/a" if value is None else f"{value * scale:.1f}{unit}"
                    if key == "mean_boundary_error_ms":
                        shown += f" ({metrics['found']}/{metrics['n']} found)"
                    lines.append(f"| {name} | {group} | {metrics['n']} | {title} | {shown} | {metrics['errors']} |")
        return "\n".join(lines) + "\n"
