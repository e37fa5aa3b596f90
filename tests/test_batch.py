"""Batch inference: manifests and result files, error rows, answers equal to the library's, a run killed
midway and resumed, and the same answers on a local Ray cluster (`ray.init(num_cpus=2)`, one per module)
as on the local worker pool. The tiny checkpoint answers greedily and fast."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from qwen_audio.batch import ManifestError, Progress, ResultsFile, check_reachable, read_manifest, run_batch, run_rows
from qwen_audio.errors import OptionError, QwenAudioError
from qwen_audio.messages import Audio, Message, Text

from .conftest import AUDIO, TINY, need_shared
from .test_cli import env, script

# Ray Data's own deprecated settings, read when it copies its context: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

CLIP = AUDIO / "你没事吧-消极.wav"  # 3.8 s
OTHER = AUDIO / "1272-128104-0000-middle_classes.wav"
GEN = {"max_new_tokens": 24}  # and greedy, the batch default
LOAD = {"dtype": "float32", "device": "cpu"}  # as the goldens were made
N_QUESTIONS = 36
BAD = {  # id -> the error type its row must give
    "missing-clip": "AudioNotFoundError", "not-audio": "AudioDecodeError", "no-question": "RowError",
    "bad-task": "RowError", "bad-messages": "RowError", "script": "AudioDecodeError",
}


def lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_manifest(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Question rows of every shape, a transcription, and rows that must become error rows."""
    need_shared()
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "notes.txt").write_text("not audio")
    (folder / "playlist.wav").write_text(f"ffconcat version 1.0\nfile '{CLIP}'\n")  # a script that names a clip
    rows = [{"id": f"q{i:02d}", "audio": str(CLIP), "question": f"Question {i}: what is it?"}
            for i in range(N_QUESTIONS)]
    rows += [
        {"id": 7, "audio": [str(CLIP), str(OTHER)], "question": "Compare the two clips."},
        {"id": "system", "audio": str(OTHER), "question": "What is said?", "system": "Answer briefly."},
        {"id": "transcript", "audio": str(OTHER), "task": "transcribe", "language": "en"},
        {"id": "missing-clip", "audio": "no-such-clip.wav", "question": "What is it?"},  # relative: the manifest's folder
        {"id": "not-audio", "audio": "notes.txt", "question": "What is it?"},
        {"id": "script", "audio": "playlist.wav", "question": "What is it?"},  # refused: never decodes CLIP
        {"id": "no-question", "audio": str(CLIP)},
        {"id": "bad-task", "audio": str(CLIP), "task": "summarise"},
        {"id": "bad-messages", "messages": [{"role": "robot", "content": "hi"}]},
    ]
    if importlib.util.find_spec("starlette") is not None:  # the server's parser reads "messages" rows
        data = base64.b64encode(CLIP.read_bytes()).decode()
        rows.append({"id": "messages", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
            {"type": "text", "text": "Question 0: what is it?"}]}]})
    path = folder / "manifest.jsonl"
    write_manifest(path, rows)
    return path


@pytest.fixture(scope="module")
def local(manifest, tmp_path_factory):
    """The results of a local run (the reference), by id."""
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    summary = run_batch(manifest, out, TINY, options=GEN, progress=False, load_options=LOAD)
    assert (summary.done, summary.skipped, summary.errors) == (len(read_manifest(manifest)), 0, len(BAD))
    return {str(r["id"]): r for r in lines(out)}


def check_complete(rows: list[dict], manifest, reference: dict) -> None:
    """Every manifest id exactly once, each with the reference's answer or error."""
    ids = [str(r["id"]) for r in rows]
    assert sorted(ids) == sorted(str(r["id"]) for r in read_manifest(manifest)), "an id is missing or doubled"
    for row in rows:
        want = reference[str(row["id"])]
        assert (row.get("answer"), row.get("error_type")) == (want.get("answer"), want.get("error_type")), row["id"]


# ---- manifests and result files ------------------------------------------------------------------------


def test_manifest_problems_name_their_line(tmp_path):
    path = tmp_path / "m.jsonl"
    for text, message in [('{"id": 1}\nnot json\n', ":2: not a JSON object"),
                          ('{"id": 1}\n\n{"question": "x"}\n', ':3: every row needs an "id"'),
                          ('[1, 2]\n', ":1: a row must be a JSON object"),
                          ('{"id": 7}\n{"id": "7"}\n', ":2: id '7' is also on line 1")]:
        path.write_text(text)
        with pytest.raises(ManifestError, match=message):
            read_manifest(path)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "absent.jsonl")
    path.write_text('{"id": "a", "audio": "clips/a.wav"}\n{"id": "b", "audio": ["/abs.wav", "b.wav"]}\n')
    rows = read_manifest(path)
    assert rows[0]["audio"] == str(tmp_path / "clips" / "a.wav")  # relative to the manifest
    assert rows[1]["audio"] == ["/abs.wav", str(tmp_path / "b.wav")]


def test_results_file_drops_an_unfinished_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    whole = '{"id": "a", "model": "m", "answer": "x"}\n{"id": 2, "model": "m", "error": "bad", "error_type": "E"}\n'
    out.write_bytes(whole.encode() + b'{"id": "c", "model": "m", "ans')
    with ResultsFile(out, "m") as results:
        assert results.done == {"a", "2"} and results.errors == 1
        assert results.notes and "unfinished last line" in results.notes[0]
        results.append({"id": "c", "model": "m", "answer": "y"})
    assert out.read_text() == whole + '{"id": "c", "model": "m", "answer": "y"}\n'
    with pytest.raises(ManifestError, match="holds answers of model 'm', not 'other'"):
        ResultsFile(out, "other")
    out.write_text("hello\n")
    with pytest.raises(ManifestError, match=":1: not a result row"):
        ResultsFile(out, "m")


def test_progress_says_rows_done_rate_and_time_left():
    stream = io.StringIO()
    bar = Progress(total=4, stream=stream)
    bar.started -= 2.0  # two seconds ago
    bar.update({"id": 1, "answer": "a"})
    bar.update({"id": 2, "error": "bad"})
    assert re.fullmatch(r"batch: 2/4 rows \(1 error\), 1\.\d\d rows/s, ETA 0:00:0[12]", bar.line())
    bar.close()
    assert stream.getvalue().startswith("batch: 2/4 rows (1 error), ") and stream.getvalue().count("\n") == 1


def test_bad_options_fail_before_the_model_loads(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "question": "hi"}\n')
    with pytest.raises(OptionError, match="unknown generation option"):
        run_batch(path, tmp_path / "out.jsonl", "no-such-model", options={"beams": 4}, progress=False)
    with pytest.raises(OptionError, match="top_p"):
        run_batch(path, tmp_path / "out.jsonl", "no-such-model", options={"top_p": 2.0}, progress=False)


def test_an_unreachable_ray_address_fails_at_once():
    started = time.monotonic()
    with pytest.raises(QwenAudioError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1")
    assert time.monotonic() - started < 5


def test_batch_and_eval_import_no_optional_dependency():
    code = ("import sys, json, qwen_audio.batch, qwen_audio.eval, qwen_audio.cli as c; c.build_parser(); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'sacrebleu', 'pyarrow', 'pandas', 'starlette', 'jiwer'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# ---- local runs --------------------------------------------------------------------------------------------


def test_local_answers_are_the_librarys_and_bad_rows_are_error_rows(local, tiny):
    model, tokenizer = tiny
    for i in (0, N_QUESTIONS - 1):
        stream = model.respond([Message("user", [Audio(str(CLIP)), Text(f"Question {i}: what is it?")])],
                               do_sample=False, **GEN)
        assert local[f"q{i:02d}"]["answer"] == "".join(stream)
    query = tokenizer.from_list_format([{"audio": str(CLIP)}, {"audio": str(OTHER)}, {"text": "Compare the two clips."}])
    assert local["7"]["answer"] == model.chat(tokenizer, query, None, do_sample=False, **GEN)[0]
    assert local["transcript"]["answer"] == model.transcribe(tokenizer, OTHER, language="en", **GEN).text
    if "messages" in local:  # the same question sent as OpenAI messages
        assert local["messages"]["answer"] == local["q00"]["answer"]
    row = local["q00"]
    assert row["usage"]["new_tokens"] > 0 and row["timings"]["total_s"] > 0 and isinstance(row["spans"], list)
    for rid, kind in BAD.items():
        assert local[rid]["error_type"] == kind and "answer" not in local[rid]
    assert "no-such-clip.wav" in local["missing-clip"]["error"]
    assert "not an audio format" in local["script"]["error"] and str(CLIP) not in local["script"]["error"]
    if "messages" in local:  # read by the server's parser (else its error says which extra is missing)
        assert "messages[0].role" in local["bad-messages"]["error"]


def test_a_killed_local_run_resumes_without_loss_or_duplicates(manifest, local, tmp_path):
    out = tmp_path / "out.jsonl"
    cmd = script() + ["batch", str(manifest), "--model", str(TINY), "--dtype", "float32", "--device", "cpu",
                      "--out", str(out), "--workers", "1", "--max-new-tokens", str(GEN["max_new_tokens"])]
    before = kill_after(cmd, out, rows=3, total=len(local))
    summary = run_batch(manifest, out, TINY, options=GEN, progress=False, load_options=LOAD)
    assert summary.skipped == len(before) and summary.done == summary.total - len(before)
    after = lines(out)
    assert after[:len(before)] == before  # what was written stays as it was
    check_complete(after, manifest, local)


def kill_after(cmd: list[str], out, rows: int, total: int) -> list[dict]:
    """Start `cmd`, SIGKILL it once `out` holds `rows` rows, and return the rows it wrote. Fails unless
    it was killed midway (it ended by itself, or had written all `total` rows)."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= rows:
                break
            time.sleep(0.005)
    finally:
        process.kill()  # SIGKILL: no handler runs, as in a crash or an OOM kill
        _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{err.decode()[-2000:]}"
    written = lines(out)
    assert rows <= len(written) < total, f"killed after {len(written)} of {total} rows: not midway"
    return written


# ---- on Ray ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module: its address."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (the scale extra: pip install 'qwen-audio[scale]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_gives_the_local_answers_and_error_rows(ray_cluster, manifest, local, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = run_batch(manifest, out, TINY, ray="auto", options=GEN, progress=False, load_options=LOAD)
    assert (summary.done, summary.errors) == (len(local), len(BAD))
    check_complete(lines(out), manifest, local)


def test_a_killed_ray_run_resumes_without_loss_or_duplicates(ray_cluster, manifest, local, tmp_path):
    out = tmp_path / "out.jsonl"
    cmd = script() + ["batch", str(manifest), "--model", str(TINY), "--dtype", "float32", "--device", "cpu",
                      "--out", str(out), "--ray", ray_cluster, "--max-new-tokens", str(GEN["max_new_tokens"])]
    before = kill_after(cmd, out, rows=3, total=len(local))
    summary = run_rows(read_manifest(manifest), out, TINY, ray=ray_cluster, options=GEN, progress=False, load_options=LOAD)
    assert summary.skipped == len(before) and summary.done == summary.total - len(before)
    after = lines(out)
    assert after[:len(before)] == before
    check_complete(after, manifest, local)
