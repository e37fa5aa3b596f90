"""Batch inference over a manifest: rows in, result rows out, on this machine or on a Ray cluster.

    qwen-audio batch rows.jsonl --model lite --out answers.jsonl               # a worker pool here
    qwen-audio batch rows.jsonl --model Qwen/Qwen-Audio-Chat --out a.jsonl --ray auto

    from qwen_audio.batch import run_batch
    summary = run_batch("rows.jsonl", "answers.jsonl", model="lite")

A manifest is JSON lines, one row per line, each with a unique "id" (a string or an integer) and one of

    {"id": "q1", "audio": "clip.wav", "question": "What is that sound?"}   # "audio": a path or a list of paths
    {"id": "q2", "messages": [...]}      # OpenAI chat messages, as /v1/chat/completions takes them
    {"id": "t1", "audio": "talk.mp3", "task": "transcribe", "language": "en"}   # or "translate"

A question row may also carry "system"; a task row "target" (the text's language) and "timestamps".
Relative audio paths are read from the manifest's folder. Each result is one line of OUT:

    {"id": "q1", "model": "lite", "answer": "...", "spans": [{"clip": null, "start": 2.33, "end": 3.26,
     "words": "middle classes"}], "timings": {"total_s": 1.21, "first_text_s": 0.84},
     "usage": {"prompt_tokens": 176, "new_tokens": 21}, "stop_reason": "stop"}
    {"id": "q9", "model": "lite", "error": "audio file not found: x.wav", "error_type": "AudioNotFoundError",
     "timings": {"total_s": 0.0}}

A row that fails (a missing or undecodable clip, a bad question) becomes an error row and the run goes
on. Rows are written as they finish, not in manifest order: join on "id". Each row is one `os.write`
of one whole line to a file opened with O_APPEND, so OUT only ever holds whole rows, and a last line
cut short by a crash (a full disk) is dropped when the run is resumed. Started again on the same OUT,
a run skips the ids already there: a killed run loses only the rows in flight and writes no id twice.

Where rows run:

* Locally (default): one model shared by `workers` threads. Processes would each hold a copy of the
  weights (16 GB for the 7B checkpoint); threads share one. On the faithful model each thread decodes
  and encodes its row's audio and the engine's scheduler writes all their answers in the same forward
  passes, so the default is the backend's `concurrency()`: the scheduler's `max_batch` there; lite
  answers on the threads themselves, so there the cores, at most 4.
* On Ray (`ray="auto"`: the cluster running on this machine, else a new local one; or an address):
  Ray Data makes a dataset of the rows to run and `map_batches` runs it on an actor pool in which each
  actor loads the model once (one actor per CPU, or per `gpus_per_worker` GPUs). This process writes
  the result rows as they stream back, so resuming works as it does locally.

Decoding is greedy unless the options say otherwise, so a row gets the same answer locally and on Ray.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from .errors import QwenAudioError

MAX_RAY_BLOCKS = 10_000  # rows per Ray block is ceil(rows / this): results stream back a block at a time
TASKS = ("transcribe", "translate")  # what a row's "task" may ask for
BATCH_DEFAULTS = {"do_sample": False}  # greedy: the same answer wherever a row runs
PROGRESS_EVERY_S = 5.0  # how often progress is printed when stderr is not a terminal


class ManifestError(QwenAudioError):
    """A manifest or results file that cannot be used: not JSON lines, a row without an id, an id twice,
    or results of another model."""


class RowError(QwenAudioError):
    """A manifest row that cannot be run as written (reported in its error row)."""


# ---- manifests and result files ---------------------------------------------------------------------


def row_key(row_id) -> str:
    """How ids are compared: 7 and "7" are the same row."""
    return str(row_id)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines manifest, each a JSON object with a unique "id" (blank lines are skipped),
    with relative audio paths resolved against the manifest's folder. Raises ManifestError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read manifest {path}: {getattr(e, 'strerror', None) or e}") from None
    rows: list[dict] = []
    lines: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{n}: a row must be a JSON object, got {type(row).__name__}")
        rid = row.get("id")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
            raise ManifestError(f'{path}:{n}: every row needs an "id", a string or an integer')
        if row_key(rid) in lines:
            raise ManifestError(f"{path}:{n}: id {rid!r} is also on line {lines[row_key(rid)]}")
        lines[row_key(rid)] = n
        rows.append(resolve_audio(row, path.absolute().parent))
    return rows


def resolve_audio(row: dict, folder: Path) -> dict:
    """`row` with its relative "audio" path(s) made absolute against `folder` (URLs are left alone)."""
    def fix(a):
        return str(folder / a) if isinstance(a, str) and a and "://" not in a and not os.path.isabs(a) else a

    audio = row.get("audio")
    if isinstance(audio, list):
        return {**row, "audio": [fix(a) for a in audio]}
    return {**row, "audio": fix(audio)} if audio is not None else row


class ResultsFile:
    """OUT, opened for whole-row appends. Opening reads the ids already there and drops a last line that
    a crash cut short; a complete line that is not a result row is an error (the file is not ours).

    `done`: keys of the ids written so far. `notes`: what opening repaired, for the user."""

    def __init__(self, path: str | os.PathLike, model: str):
        self.path, self.model = Path(path), model
        self.done: set[str] = set()
        self.errors = 0  # error rows already in the file
        self.notes: list[str] = []
        if self.path.is_dir():
            raise ManifestError(f"cannot write {self.path}: it is a folder")
        self._read_existing()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise ManifestError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._lock = threading.Lock()

    def _read_existing(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise ManifestError(f"cannot read {self.path}: {e.strerror or e}") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the last write was cut short: only whole lines are rows
            os.truncate(self.path, end)
            self.notes.append(f"dropped an unfinished last line ({len(data) - end} bytes) from {self.path}")
            data = data[:end]
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "id" not in row:
                raise ManifestError(f"{self.path}:{n}: not a result row; is this the right output file?")
            if row.get("model") != self.model:
                raise ManifestError(f"{self.path} holds answers of model {row.get('model')!r}, not {self.model!r}: "
                                    "resume it with that model, or write to another file")
            self.done.add(row_key(row["id"]))
            self.errors += "error" in row

    def append(self, row: dict) -> None:
        """Write one row as one line, with one write call (O_APPEND puts it whole at the end)."""
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (disk full, a signal): finish the line
                written += os.write(self._fd, data[written:])
            self.done.add(row_key(row["id"]))

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_results(path: str | os.PathLike) -> dict[str, dict]:
    """The result rows of OUT by id key (a later row of an id wins)."""
    out: dict[str, dict] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # an unfinished last line
        if isinstance(row, dict) and "id" in row:
            out[row_key(row["id"])] = row
    return out


# ---- one row ----------------------------------------------------------------------------------------------


def row_messages(row: dict) -> list:
    """The structured messages of a question row or a "messages" row (read by the server's parser)."""
    from .messages import Audio, Message, Text

    if "messages" in row:
        if "question" in row or "audio" in row:
            raise RowError('a row has "messages", or "audio" and "question", not both')
        try:
            from .server.protocol import ApiError, chat_request
        except ImportError as e:
            raise RowError(f'"messages" rows are read by the server\'s parser: pip install "qwen-audio[server]" ({e})') \
                from None
        try:
            return chat_request({"messages": row["messages"]}).messages
        except ApiError as e:
            if e.code == "urls_not_allowed":
                raise RowError(f"{e.param}: audio_url parts are not fetched in batch runs; send input_audio data, "
                               'or a path in "audio" with a "question"') from None
            raise RowError(f"{e.param}: {e.message}" if e.param else e.message) from None
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RowError('a row needs a "question" (text) with its "audio", a "task", or "messages"')
    audio = row.get("audio", [])
    clips = [audio] if isinstance(audio, str) else audio
    if not isinstance(clips, list) or not all(isinstance(a, str) and a for a in clips):
        raise RowError('"audio" must be a path or a list of paths')
    messages = []
    if row.get("system") is not None:
        if not isinstance(row["system"], str):
            raise RowError('"system" must be text')
        messages.append(Message("system", row["system"]))
    messages.append(Message("user", [Audio(a) for a in clips] + [Text(question)]))
    return messages


def spans_of(answer: str) -> list[dict]:
    """The grounded spans of an answer: clip (0-based, when the answer names one), start, end (s), words."""
    from .grounding import parse_spans

    return [{"clip": s.clip, "start": s.start, "end": s.end, "words": s.words} for s in parse_spans(answer).spans]


def _chat(model, row: dict, options: dict) -> dict:
    stream = model.respond(row_messages(row), **options)
    with stream:
        for _ in stream:
            pass
    stats = stream.stats
    return {"answer": stream.response, "spans": spans_of(stream.response),
            "timings": {"first_text_s": stats.first_text_s},
            "usage": {"prompt_tokens": stats.prompt_tokens, "new_tokens": stats.new_tokens},
            "stop_reason": stats.stop_reason}


def _transcribe(model, row: dict, options: dict) -> dict:
    task, audio = row["task"], row.get("audio")
    if task not in TASKS:
        raise RowError(f'unknown task {task!r}: use "transcribe" or "translate" (or ask a "question")')
    if not isinstance(audio, str) or not audio:
        raise RowError(f'a {task} row needs "audio", one path')
    for name in ("language", "target"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise RowError(f'"{name}" must be a language code such as "en"')
    timestamps = bool(row.get("timestamps", False))
    t = model.transcribe(None, audio, language=row.get("language"), task=task, target=row.get("target"),
                         timestamps=timestamps, **options)
    out = {"answer": t.text, "spans": [], "language": t.language, "duration": t.duration}
    if timestamps:
        out["segments"] = [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments]
    return out


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def answer_row(model, row: dict, options: dict, name: str) -> dict:
    """Run one manifest row on a loaded backend. Returns its result row; a row that fails, for any reason,
    returns an error row (one bad clip must not end a long run)."""
    started = time.perf_counter()
    out: dict = {"id": row["id"], "model": name}
    try:
        out.update(_transcribe(model, row, options) if "task" in row else _chat(model, row, options))
    except Exception as e:  # noqa: BLE001 - reported in the row: its type and message
        out.update(error=one_line(e), error_type=type(e).__name__)
    out["timings"] = {"total_s": round(time.perf_counter() - started, 4), **out.get("timings", {})}
    return out


# ---- where rows run ----------------------------------------------------------------------------------------


def model_name(model: str | os.PathLike) -> str:
    """The model as result rows name it: a folder's absolute path, else the name given ("lite", a hub id)."""
    text = os.fspath(model)
    return os.path.abspath(text) if os.path.isdir(text) else text


def iter_local(rows: list[dict], model, name: str, options: dict, workers: int) -> Iterator[dict]:
    """Result rows as they finish, from `workers` threads sharing `model` (a loaded backend). At most
    2 x workers rows are queued at once, so a long manifest is not all submitted up front."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="qwen-audio-batch")
    todo, pending = iter(rows), set()
    try:
        while True:
            for row in todo:
                pending.add(pool.submit(answer_row, model, row, options, name))
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()
    finally:
        # Ctrl-C or a closed generator: drop what has not started; rows in flight finish unseen.
        pool.shutdown(wait=False, cancel_futures=True)


class RayWorker:
    """A Ray Data actor: loads the model once, then answers batches of rows (JSON text in, JSON text out,
    so rows of any shape travel through Arrow as one string column)."""

    def __init__(self, model: str, options: dict, load_options: dict | None = None):
        import qwen_audio

        self.name, self.options = model, options
        self.model, _ = qwen_audio.load(model, **(load_options or {}))

    def __call__(self, batch: dict) -> dict:
        rows = [json.loads(r) for r in batch["row"]]
        return {"result": [json.dumps(answer_row(self.model, r, self.options, self.name), ensure_ascii=False)
                           for r in rows]}


def import_ray():
    """The `ray` module, with `ray.data` imported; a QwenAudioError naming the extra when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise QwenAudioError(f"--ray needs the scale extras: pip install 'qwen-audio[scale]' ({e})") from None
    return ray


def connect_ray(ray, address: str) -> bool:
    """Join a Ray cluster: `address`, or with "auto" the one running on this machine, else a new local one.
    Returns False when this process was already connected (then it must not disconnect)."""
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, logging_level=logging.WARNING)
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:  # none runs here: start one for this run
            ray.init(**quiet)
        return True
    check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as e:
        raise QwenAudioError(f"cannot reach the Ray cluster at {address}: {one_line(e)}") from None
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nothing listens at (ray.init would retry for minutes). Ray Client
    addresses (ray://...) are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise QwenAudioError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def ray_workers(ray, gpus_per_worker: float) -> int:
    """Actors for the cluster: one per CPU, or one per `gpus_per_worker` GPUs."""
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)))


def iter_ray(rows: list[dict], model: str, options: dict, *, address: str = "auto", workers: int | None = None,
             load_options: dict | None = None, gpus_per_worker: float = 0.0) -> Iterator[dict]:
    """Result rows as they stream back from a Ray Data actor pool (each actor loads `model` once)."""
    ray = import_ray()  # with ray.data
    started = connect_ray(ray, address)
    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and "execution finished" lines
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours is on stderr
        n = max(1, min(workers or ray_workers(ray, gpus_per_worker), len(rows)))
        items = [{"row": json.dumps(r, ensure_ascii=False)} for r in rows]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_RAY_BLOCKS))
        resources = {"num_gpus": gpus_per_worker} if gpus_per_worker > 0 else {"num_cpus": 1}
        ds = ds.map_batches(RayWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n),
                            fn_constructor_kwargs=dict(model=model, options=options, load_options=load_options),
                            **resources)
        for item in ds.iter_rows():
            yield json.loads(item["result"])
    finally:
        if started:
            ray.shutdown()


# ---- progress ----------------------------------------------------------------------------------------------


class Progress:
    """Rows done, rows/s and the time left, on stderr: rewritten in place on a terminal, else a line every
    PROGRESS_EVERY_S seconds, and a last line at the end."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None, label: str = "batch"):
        self.total, self.enabled, self.label = total, enabled, label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.errors = 0
        self.shown = -1  # `done` when a line was last printed
        self.started = self.printed = time.perf_counter()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        left = "?" if eta is None else "{}:{:02d}:{:02d}".format(int(eta // 3600), int(eta % 3600 // 60), int(eta % 60))
        errors = f" ({self.errors} error{'s' if self.errors != 1 else ''})" if self.errors else ""
        return f"{self.label}: {self.done}/{self.total} rows{errors}, {rate:.2f} rows/s, ETA {left}"

    def update(self, row: dict) -> None:
        self.done += 1
        self.errors += "error" in row
        now = time.perf_counter()
        if not self.enabled:
            return
        if self.tty and now - self.printed >= 0.2:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self.printed = now
        elif not self.tty and now - self.printed >= PROGRESS_EVERY_S:
            print(self.line(), file=self.stream, flush=True)
            self.printed, self.shown = now, self.done

    def close(self) -> None:
        if self.enabled and self.done and (self.tty or self.shown != self.done):
            self.stream.write(("\r" if self.tty else "") + self.line() + ("\x1b[K\n" if self.tty else "\n"))
            self.stream.flush()


# ---- a whole run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSummary:
    """What a run did."""

    total: int  # rows in the manifest
    skipped: int  # rows already in OUT before this run (not run again)
    done: int  # rows this run wrote
    errors: int  # of those, error rows
    seconds: float  # wall time of the run, model loading included


def check_options(options: dict) -> dict:
    """Batch options (greedy by default) checked before any model loads: a bad name or value is an
    OptionError now, not an error in every row."""
    from .options import GenerationConfig

    options = {**BATCH_DEFAULTS, **options}
    GenerationConfig(max_new_tokens=1).updated(**options)
    return options


def run_rows(rows: Iterable[dict], out: str | os.PathLike, model: str | os.PathLike = "lite", *,
             workers: int | None = None, ray: str | None = None, options: dict | None = None,
             load_options: dict | None = None, gpus_per_worker: float = 0.0, progress: bool = True,
             log: Callable[[str], None] | None = None) -> BatchSummary:
    """Answer `rows` (manifest rows, as `read_manifest` gives them) into the results file `out`, skipping
    ids already there. `ray`: None runs here on `workers` threads (default: the model's `concurrency()`); "auto"
    or an address runs on Ray with `workers` actors (default: one per CPU, or per `gpus_per_worker`).
    `options`: generation options (greedy unless they say `do_sample=True`). `load_options`: keyword
    arguments of `qwen_audio.load` (dtype, device, ...), in each Ray actor too."""
    started = time.perf_counter()
    say = log or (lambda message: print(f"qwen-audio: {message}", file=sys.stderr, flush=True))
    rows, name, options = list(rows), model_name(model), check_options(options or {})
    if workers is not None and workers < 1:
        raise QwenAudioError(f"workers must be at least 1, got {workers}")
    with ResultsFile(out, name) as results:
        for note in results.notes:
            say(note)
        todo = [r for r in rows if row_key(r["id"]) not in results.done]
        skipped = len(rows) - len(todo)
        if progress and skipped:
            say(f"all {skipped} rows are already in {out}" if not todo else
                f"{skipped} of {len(rows)} rows are already in {out}; running the other {len(todo)}")
        bar = Progress(len(todo), enabled=progress and bool(todo))
        if not todo:
            return BatchSummary(len(rows), skipped, 0, 0, round(time.perf_counter() - started, 3))
        if ray is None:
            import qwen_audio

            if progress:
                say(f"loading model {name} ...")
            loaded, _ = qwen_audio.load(name, **(load_options or {}))
            n = workers or loaded.concurrency()
            if progress:
                say(f"{n} rows at a time")
            bar.started = time.perf_counter()  # rows/s counts rows, not the load
            stream = iter_local(todo, loaded, name, options, n)
        else:
            if progress:
                say(f"running {len(todo)} rows on Ray ({ray}); each actor loads {name} once ...")
            stream = iter_ray(todo, name, options, address=ray, workers=workers, load_options=load_options,
                              gpus_per_worker=gpus_per_worker)
        try:
            for result in stream:
                results.append(result)
                bar.update(result)
        finally:
            stream.close()
            bar.close()
    return BatchSummary(len(rows), skipped, bar.done, bar.errors, round(time.perf_counter() - started, 3))


def run_batch(manifest: str | os.PathLike, out: str | os.PathLike, model: str | os.PathLike = "lite",
              **kwargs) -> BatchSummary:
    """`run_rows` over the rows of a JSON-lines manifest (see the module's docstring)."""
    if os.path.exists(out) and os.path.exists(manifest) and os.path.samefile(out, manifest):
        raise ManifestError(f"{out} is the manifest: write the results to another file")
    return run_rows(read_manifest(manifest), out, model, **kwargs)
