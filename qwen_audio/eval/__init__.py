"""Evaluate a model on a manifest: ASR, speech translation, classification, grounding, audio QA.

    qwen-audio eval asr --manifest librispeech.jsonl --model Qwen/Qwen-Audio-Chat --ray auto
    qwen-audio eval all --manifest shared.jsonl --model lite          # each row names its "task"

    from qwen_audio.eval import evaluate
    report = evaluate("asr", "librispeech.jsonl", model="lite")
    print(report.markdown())

Rows are asked through `qwen_audio.batch` (locally or on Ray, resumable), then scored; `out_dir` keeps
`results.jsonl` (the answers: a rerun resumes from it, so delete it after changing the manifest or the
options), `report.json` and `report.md`. Row formats and where prompts come from: `tasks`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..batch import ManifestError, read_manifest, read_results, row_key, run_rows
from ..errors import QwenAudioError
from .report import Report
from .tasks import PUBLISHED_MAX_NEW_TOKENS, TASKS, TaskScore

__all__ = ["ALL", "TASKS", "Report", "TaskScore", "evaluate", "pick_rows"]
ALL = "all"  # every row, by its own "task"
EVAL_DEFAULTS = {"do_sample": False, "max_new_tokens": PUBLISHED_MAX_NEW_TOKENS}


def pick_rows(task: str, rows: list[dict]) -> tuple[list[tuple[str, dict]], int]:
    """(task name, row) for the rows `task` evaluates, and how many rows were left out: with a task, rows
    naming no task or that one; with "all", every row, by its "task" (which each row must name)."""
    if task != ALL and task not in TASKS:
        raise QwenAudioError(f"unknown task {task!r}; use one of {', '.join([*TASKS, ALL])}")
    picked, skipped = [], 0
    for row in rows:
        name = row.get("task", task if task != ALL else None)
        if name is None:
            raise ManifestError(f'row {row["id"]!r}: with task "all", every row names its "task" '
                                f"({', '.join(TASKS)})")
        if name not in TASKS:
            raise ManifestError(f"row {row['id']!r}: unknown task {name!r}; use one of {', '.join(TASKS)}")
        if task != ALL and name != task:
            skipped += 1
            continue
        TASKS[name].check(row)
        picked.append((name, row))
    if not picked:
        raise ManifestError(f"the manifest has no {task} rows")
    return picked, skipped


def evaluate(task: str, manifest: str | os.PathLike, model: str | os.PathLike = "lite", *,
             out_dir: str | os.PathLike | None = None, ray: str | None = None, workers: int | None = None,
             options: dict | None = None, load_options: dict | None = None, gpus_per_worker: float = 0.0,
             progress: bool = True) -> Report:
    """Run and score `task` ("asr", "st", "sound", "instrument", "emotion", "language", "grounding", "aqa",
    or "all") on the rows of `manifest`. `out_dir` (default: eval-TASK-MODEL) gets results.jsonl,
    report.json and report.md. `ray`, `workers`, `gpus_per_worker`, `load_options`: where rows run and
    how the model loads (see `qwen_audio.batch.run_rows`). `options`: generation options (default: greedy, 256 new tokens at most,
    as the published scripts generate)."""
    started = time.perf_counter()
    picked, skipped = pick_rows(task, read_manifest(manifest))
    out = Path(out_dir if out_dir is not None else f"eval-{task}-{Path(os.fspath(model)).name or 'model'}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QwenAudioError(f"cannot create {out}: {e.strerror or e}") from None
    options = {**EVAL_DEFAULTS, **(options or {})}
    requests = [TASKS[name].request(row) for name, row in picked]
    run_rows(requests, out / "results.jsonl", model, workers=workers, ray=ray, options=options,
             load_options=load_options, gpus_per_worker=gpus_per_worker, progress=progress)
    results = read_results(out / "results.jsonl")
    by_task: dict[str, list] = {}
    for name, row in picked:
        by_task.setdefault(name, []).append((row, results.get(row_key(row["id"]))))
    report = Report(os.fspath(model), os.fspath(manifest), os.fspath(out / "results.jsonl"), options,
                    round(time.perf_counter() - started, 2), skipped=skipped)
    for name in TASKS:  # the registry's order
        if name in by_task:
            report.tasks[name] = TASKS[name].score(by_task[name])
    (out / "report.json").write_text(report.to_json(), encoding="utf-8")
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    return report
