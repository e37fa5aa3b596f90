"""Evaluation: metrics against known values, normalisers, label reading, each task's scoring of result
rows, the report; and one real-speech run of `qwen-audio eval` on the lite backend over the tutorial's clips."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_audio.batch import ManifestError
from qwen_audio.errors import QwenAudioError
from qwen_audio.eval import ALL, TASKS, Report, pick_rows
from qwen_audio.eval import normalize as norm
from qwen_audio.eval.labels import LabelSet, find_label, yes_no
from qwen_audio.eval.metrics import ErrorRate, bleu_tokenizer, boundary_error_ms, corpus_bleu, edit_distance, error_rate

from .conftest import AUDIO, SHARED
from .test_cli import env, script

REPO = Path(__file__).resolve().parents[1]
LIBRISPEECH = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"


# ---- metrics ------------------------------------------------------------------------------------------------


def test_edit_distance_and_error_rates_of_known_strings():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1
    one = error_rate(["the cat sat on the mat"], ["the cat sit on mat"])  # a substitution and a deletion
    assert one == ErrorRate(2, 6) and one.rate == pytest.approx(1 / 3)
    corpus = error_rate(["a b c d", "e f"], ["a b c d", "x e f y"])  # two insertions over 6 words
    assert corpus.rate == pytest.approx(2 / 6)  # the corpus rate, not the mean of 0 and 1
    assert error_rate([""], ["words"]).rate is None


def test_whisper_normaliser_and_the_published_one():
    hyp = "Mr. Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
    assert norm.normalize(hyp, "en") == norm.normalize(LIBRISPEECH, "en")  # mr -> mister, case, punctuation
    assert error_rate([norm.tokens(LIBRISPEECH)], [norm.tokens(hyp)]).errors == 0
    # The published scoring keeps punctuation and abbreviations: 3 of 17 words differ.
    assert error_rate([norm.published_tokens(LIBRISPEECH)], [norm.published_tokens(hyp)]) == ErrorRate(3, 17)
    assert norm.english("I won't go [noise] (laughs), um, it's 5.5% of $1,000") == "i will not go it is 5.5% of $1000"
    assert norm.basic("¿Qué tal? ¡Muy bien!") == "qué tal muy bien"
    assert norm.tokens("你没事吧。", "zh") == ["你", "没", "事", "吧"]
    assert norm.published("<|zh|>你 没事 吧 ,", "zh") == "你没事吧,"


def test_bleu_matches_sacrebleus_documented_example():
    pytest.importorskip("sacrebleu", reason="sacrebleu is not installed (the scale extra)")
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert corpus_bleu(hyps, refs) == pytest.approx(48.53, abs=0.005)  # sacreBLEU's README
    assert corpus_bleu(["the dog bit the man"], [["the dog bit the man"]]) == pytest.approx(100.0)
    assert [bleu_tokenizer(x) for x in ("en", "zh", "es")] == ["13a", "zh", "13a"]


def test_boundary_error():
    assert boundary_error_ms((6.29, 7.16), (6.28, 7.15)) == pytest.approx(10.0)
    assert boundary_error_ms((2.0, 3.5), (2.3, 3.26)) == pytest.approx(270.0)  # (300 + 240) / 2


# ---- reading answers ----------------------------------------------------------------------------------------


def test_labels_named_first_count_and_negated_ones_do_not():
    sound = LabelSet.of("sound", ["glass breaking"])
    assert find_label("This is a sound effect of breaking glass.", sound) == "glass breaking"
    assert find_label("I hear no speech in this audio; a dog barks.", sound) == "dog barking"
    assert find_label("It can't tell which music or noise this is.", sound) is None
    emotion = LabelSet.of("emotion", ["happy", "sad"])
    assert emotion.canonical("happy") == "joy" and emotion.canonical("Sadness") == "sadness"
    assert find_label("happy in the first audio, but sad in the second", emotion) == "joy"
    language = LabelSet.of("language", ["es"])
    assert find_label('The speech is of a man speaking, in a Spanish, saying, "en la playa".', language) == "es"
    assert find_label("The speaker speaks in a Southwestern Mandarin.", language) == "zh"
    custom = LabelSet.of(None, ["kazoo"], {"kazoo": ["buzzing"]})
    assert find_label("A loud buzzing toy.", custom) == "kazoo"
    assert (yes_no("No, nobody speaks."), yes_no("Yes."), yes_no("Maybe")) == ("no", "yes", None)


# ---- tasks on result rows -----------------------------------------------------------------------------------


def ok(rid, answer, **more):
    return {"id": rid, "model": "m", "answer": answer, "spans": [], **more}


def failed(rid):
    return {"id": rid, "model": "m", "error": "audio file not found: x.wav", "error_type": "AudioNotFoundError"}


def test_asr_scores_per_language_and_failed_rows_count_as_empty():
    pairs = [({"id": 1, "text": "the cat sat on the mat", "language": "en"}, ok(1, "The cat sit on mat.")),
             ({"id": 2, "text": "hello world", "language": "en"}, failed(2)),
             ({"id": 3, "text": "你没事吧", "language": "zh"}, ok(3, "你没事吗？"))]
    score = TASKS["asr"].score(pairs)
    en, zh = score.groups["en"], score.groups["zh"]
    assert (en["metric"], en["wer"], en["n"], en["errors"]) == ("wer", 0.5, 2, 1)  # (2 + 2) / (6 + 2)
    assert (zh["metric"], zh["cer"], "wer" not in zh) == ("cer", 0.25, True)
    assert score.errors == 1 and score.items[1]["error"].startswith("audio file not found")


def test_st_bleu_per_language_pair():
    pytest.importorskip("sacrebleu", reason="sacrebleu is not installed (the scale extra)")
    pairs = [({"id": 1, "text": "The dog bit the man.", "language": "es"}, ok(1, "The dog bit the man.")),
             ({"id": 2, "text": "Good morning.", "language": "de"}, failed(2))]
    groups = TASKS["st"].score(pairs).groups
    assert groups["es->en"]["bleu"] == pytest.approx(100.0) and groups["de->en"]["bleu"] == 0.0
    assert TASKS["st"].request({"id": 1, "audio": "a.wav", "language": "es"}) == \
        {"id": 1, "audio": "a.wav", "task": "translate", "language": "es", "target": "en"}


def test_classification_grounding_and_aqa_scores():
    pairs = [({"id": 1, "label": "piano"}, ok(1, "The instrument is the piano.")),
             ({"id": 2, "label": "violin"}, ok(2, "It is a guitar.")),
             ({"id": 3, "label": "piano"}, ok(3, "I can't tell."))]
    score = TASKS["instrument"].score(pairs)
    assert score.groups["all"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4) and score.groups["all"]["unmatched"] == 1
    assert [i["predicted"] for i in score.items] == ["piano", "guitar", None]
    assert TASKS["instrument"].request({"id": 1, "audio": "m.wav"})["question"] == "what is the instrument"

    spans = [{"clip": None, "start": 1.0, "end": 1.5, "words": "other"},
             {"clip": None, "start": 6.29, "end": 7.16, "words": "companionless"}]
    pairs = [({"id": 1, "words": "companionless", "start": 6.28, "end": 7.15}, ok(1, "...", spans=spans)),
             ({"id": 2, "words": "gospel", "start": 5.0, "end": 5.5}, ok(2, "I cannot find it.")),
             ({"id": 3, "words": "moon", "start": 5.0, "end": 5.5}, failed(3))]
    group = TASKS["grounding"].score(pairs).groups["all"]
    assert (group["mean_boundary_error_ms"], group["found"], group["n"], group["aas_ms"]) == (10.0, 1, 3, 20.0)
    assert TASKS["grounding"].request({"id": 1, "audio": "a", "words": "middle classes"})["question"] == \
        'Find the start time and end time of the word "middle classes"'

    pairs = [({"id": 1, "question": "Is anyone speaking?", "answer": "no"}, ok(1, "No, it is piano music.")),
             ({"id": 2, "question": "Did it break?", "answer": "Yes"}, ok(2, "I hear no speech.")),
             ({"id": 3, "question": "Which sport?", "answer": "water sports", "synonyms": ["swimming"]},
              ok(3, "They mention swimming.")),
             ({"id": 4, "question": "Who?", "answer": "a man"}, failed(4))]
    groups = TASKS["aqa"].score(pairs).groups
    assert groups["all"]["accuracy"] == 0.5 and groups["yes/no"] == {"n": 2, "errors": 0, "metric": "accuracy",
                                                                      "accuracy": 0.5}


def test_rows_are_picked_by_task_and_checked():
    rows = [{"id": 1, "task": "asr", "audio": "a", "text": "x"}, {"id": 2, "task": "aqa", "audio": "a",
                                                                   "question": "q", "answer": "no"},
            {"id": 3, "audio": "a", "text": "y"}]
    picked, skipped = pick_rows("asr", rows)
    assert [r["id"] for _, r in picked] == [1, 3] and skipped == 1
    with pytest.raises(ManifestError, match="row 3: with task \"all\", every row names its \"task\""):
        pick_rows(ALL, rows)
    with pytest.raises(ManifestError, match="row 1: grounding rows need 'words', 'start', 'end'"):
        pick_rows("grounding", [{"id": 1, "audio": "a"}])
    with pytest.raises(ManifestError, match="no emotion rows"):
        pick_rows("emotion", rows[:2])
    with pytest.raises(QwenAudioError, match="unknown task 'ocr'"):
        pick_rows("ocr", rows)


def test_report_json_and_markdown():
    report = Report("lite", "m.jsonl", "out/results.jsonl", {"do_sample": False}, 1.0)
    report.tasks["asr"] = TASKS["asr"].score([({"id": 1, "text": "a b", "language": "en"}, ok(1, "a c"))])
    report.tasks["grounding"] = TASKS["grounding"].score([({"id": 2, "words": "w", "start": 1, "end": 2}, failed(2))])
    table = report.markdown().splitlines()
    assert "| asr | en | 1 | WER | 50.0% | 0 |" in table
    assert "| asr | en | 1 | WER, published normaliser | 50.0% | 0 |" in table
    assert "| grounding | all | 1 | mean boundary error | n/a (0/1 found) | 1 |" in table
    data = json.loads(report.to_json())
    assert data["tasks"]["asr"]["groups"]["en"]["wer"] == 0.5 and data["tasks"]["asr"]["items"][0]["answer"] == "a c"


# ---- a real evaluation --------------------------------------------------------------------------------------


def test_eval_lite_on_the_tutorial_clips(tmp_path):
    """`qwen-audio eval all` as a user runs it, on rows the example builder writes from the shared clips."""
    if not AUDIO.is_dir():
        pytest.skip(f"tutorial clips not found under {SHARED} (set QWEN_AUDIO_FIXTURES)")
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("the lite backend is not installed (pip install 'qwen-audio[lite]')")
    manifest = tmp_path / "shared.jsonl"
    subprocess.run([sys.executable, str(REPO / "examples" / "shared_manifest.py"), "-o", str(manifest),
                    "--audio-dir", str(AUDIO), "--tasks", "asr,language,grounding"], check=True, env=env())
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    done = subprocess.run(script() + ["eval", "all", "--manifest", str(manifest), "--model", "lite",
                                      "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, encoding="utf-8", env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert done.stdout == (tmp_path / "out" / "report.md").read_text()
    assert "batch: " in done.stderr and "rows/s" in done.stderr  # progress
    tasks = report["tasks"]
    assert sum(t["n"] for t in tasks.values()) == len(rows) and all(t["errors"] == 0 for t in tasks.values())
    # Whisper base reads the two English LibriSpeech-style clips almost perfectly once normalised ...
    assert tasks["asr"]["groups"]["en"]["wer"] <= 0.1
    # ... names the spoken language, and its word times land near the tutorial's.
    assert tasks["language"]["groups"]["all"]["accuracy"] >= 0.75
    grounding = tasks["grounding"]["groups"]["all"]
    assert grounding["found"] == grounding["n"] and grounding["mean_boundary_error_ms"] < 100
    assert "| asr | en | 2 | WER |" in done.stdout


def test_eval_runs_every_task_on_a_qwen2_audio_checkpoint(tmp_path, qwen2_audio_folder):
    """`qwen-audio eval all` on a Qwen2-Audio folder: every row is answered (its transcription rows by
    `transcribe`) and scored, none fails. (Random weights: the scores themselves mean nothing.)"""
    if not AUDIO.is_dir():
        pytest.skip(f"tutorial clips not found under {SHARED} (set QWEN_AUDIO_FIXTURES)")
    manifest = tmp_path / "shared.jsonl"
    subprocess.run([sys.executable, str(REPO / "examples" / "shared_manifest.py"), "-o", str(manifest),
                    "--audio-dir", str(AUDIO)], check=True, env=env())
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    done = subprocess.run(script() + ["eval", "all", "--manifest", str(manifest), "--model", str(qwen2_audio_folder[0]),
                                      "--max-new-tokens", "6", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, encoding="utf-8", env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = json.loads((tmp_path / "out" / "report.json").read_text())["tasks"]
    assert sum(t["n"] for t in tasks.values()) == len(rows) and all(t["errors"] == 0 for t in tasks.values())
    assert {"asr", "st", "sound", "grounding", "aqa"} <= set(tasks)
