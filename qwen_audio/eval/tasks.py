"""Evaluation tasks: how a manifest row is asked (a batch row) and how the answers are scored.

Manifest rows, by task ("id" and "audio" in each; "task" names the task in a manifest of several):

    asr        {"text": reference transcript, "language": "en"}
    st         {"text": reference translation, "language": spoken, "target": "en"}
    sound, instrument, emotion, language
               {"label": "piano", "synonyms": [...] (optional), "question": ... (optional)}
    grounding  {"words": "middle classes", "start": 2.33, "end": 3.26 (seconds), "question": ... (optional)}
    aqa        {"question": "Is anyone speaking?", "answer": "no", "synonyms": [...] (optional)}

Prompts and parsing follow QwenLM/Qwen-Audio's eval_audio/ scripts where the chat interface can send
them. ASR and speech translation run `model.transcribe`, whose task prompt is the published one
token for token; greedy with at most 256 new tokens as those scripts generate. The classification and
question-answering scripts send the base model raw task tags (`<|startofanalysis|>...`), which the chat
interface does not take: the chat model is asked in words (the tutorial's questions where it has
them), and the answer's sentence is read for the label (see `labels`). Each task's `prompt` says which.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from ..batch import ManifestError
from . import normalize as norm
from .labels import LabelSet, find_label, yes_no
from .metrics import bleu_tokenizer, boundary_error_ms, corpus_bleu, error_rate

PUBLISHED_MAX_NEW_TOKENS = 256  # eval_audio/evaluate_*.py: generate(do_sample=False, max_new_tokens=256)


@dataclass
class TaskScore:
    """A task's scores over its rows."""

    task: str
    n: int  # rows scored
    errors: int  # rows whose run failed: scored as wrong (an empty transcript, no label, no span)
    groups: dict[str, dict]  # group (a language, a pair, "all") -> {"n", "errors", "metric": the table's, metrics...}
    prompt: str  # how rows were asked and read, and where that comes from
    items: list[dict] = field(default_factory=list)  # per row: reference, answer, score
    details: dict = field(default_factory=dict)  # more breakdowns (per label, ...)


def _round(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)


def failed(result: dict | None) -> bool:
    return result is None or "error" in result


def answer_of(result: dict | None) -> str:
    return "" if failed(result) else str(result.get("answer", ""))


def item(row: dict, result: dict | None, **score) -> dict:
    out = {"id": row["id"], "answer": answer_of(result), **score}
    if result is None:
        out["error"] = "no result row"
    elif "error" in result:
        out["error"] = result["error"]
    return out


class Task:
    """A task: its name, the fields its rows need, how a row is asked, how answers are scored."""

    name = ""
    needs: tuple[str, ...] = ("audio",)
    prompt = ""

    def check(self, row: dict) -> None:
        missing = [f for f in self.needs if row.get(f) in (None, "")]
        if missing:
            raise ManifestError(f"row {row['id']!r}: {self.name} rows need {', '.join(repr(m) for m in missing)}")

    def request(self, row: dict) -> dict:
        """The batch row that asks `row`."""
        raise NotImplementedError

    def score(self, pairs: list[tuple[dict, dict | None]]) -> TaskScore:
        """Scores of (manifest row, result row or None) pairs."""
        raise NotImplementedError


class ASR(Task):
    name = "asr"
    needs = ("audio", "text")
    prompt = ("model.transcribe(language=L): the task prompt of eval_audio/evaluate_asr.py, "
              "<|startoftranscript|><|L|><|transcribe|><|L|><|notimestamps|><|wo_itn|>; WER (CER for zh, ja, yue) "
              "after Whisper's normaliser, and after the published one (evaluate_asr.py remove_sp + lowercase)")

    def request(self, row):
        return {"id": row["id"], "audio": row["audio"], "task": "transcribe", "language": row.get("language")}

    def score(self, pairs):
        by_language: dict[str, list] = {}
        items = []
        for row, result in pairs:
            language = row.get("language") or (result or {}).get("language") or "en"
            hyp, ref = answer_of(result), str(row["text"])
            units = error_rate([norm.tokens(ref, language)], [norm.tokens(hyp, language)])
            items.append(item(row, result, language=language, reference=ref, errors=units.errors, length=units.length))
            by_language.setdefault(language, []).append((ref, hyp, failed(result)))
        groups = {}
        for language, members in sorted(by_language.items()):
            refs, hyps = [m[0] for m in members], [m[1] for m in members]
            metric = "cer" if language in norm.NO_SPACE_LANGUAGES else "wer"
            words = error_rate([norm.normalize(r, language).split() for r in refs],
                               [norm.normalize(h, language).split() for h in hyps])
            chars = error_rate([list(norm.normalize(r, language).replace(" ", "")) for r in refs],
                               [list(norm.normalize(h, language).replace(" ", "")) for h in hyps])
            published = error_rate([norm.published_tokens(r, language) for r in refs],
                                   [norm.published_tokens(h, language) for h in hyps])
            rates = {"cer": chars.rate} if metric == "cer" else {"wer": words.rate, "cer": chars.rate}
            groups[language] = {"n": len(members), "errors": sum(m[2] for m in members), "metric": metric,
                                **{k: _round(v) for k, v in rates.items()}, f"{metric}_published": _round(published.rate)}
        return TaskScore(self.name, len(pairs), sum(failed(r) for _, r in pairs), groups, self.prompt, items)


class ST(Task):
    name = "st"
    needs = ("audio", "text", "language")
    prompt = ("model.transcribe(task='translate', language=S, target=T): the task prompt of eval_audio/evaluate_st.py, "
              "<|startoftranscript|><|S|><|translate|><|T|><|notimestamps|><|itn|>; corpus sacreBLEU per language pair "
              "with evaluate_st.py's tokenizer (ja-mecab for ja, zh for zh, else 13a)")

    def request(self, row):
        return {"id": row["id"], "audio": row["audio"], "task": "translate", "language": row["language"],
                "target": row.get("target") or "en"}

    def score(self, pairs):
        by_pair: dict[tuple[str, str], list] = {}
        items = []
        for row, result in pairs:
            source, target = row["language"], row.get("target") or "en"
            by_pair.setdefault((source, target), []).append((str(row["text"]), answer_of(result), failed(result)))
            items.append(item(row, result, pair=f"{source}->{target}", reference=row["text"]))
        groups = {}
        for (source, target), members in sorted(by_pair.items()):
            tokenize = bleu_tokenizer(target)
            bleu = corpus_bleu([m[1] for m in members], [[m[0] for m in members]], tokenize=tokenize)
            groups[f"{source}->{target}"] = {"n": len(members), "errors": sum(m[2] for m in members),
                                             "metric": "bleu", "bleu": round(bleu, 2), "tokenize": tokenize}
        return TaskScore(self.name, len(pairs), sum(failed(r) for _, r in pairs), groups, self.prompt, items)


class Classify(Task):
    """Which label of a category (sound event, instrument, emotion, language) a clip is."""

    needs = ("audio", "label")

    def __init__(self, name: str, category: str, question: str, prompt: str):
        self.name, self.category, self.question, self.prompt = name, category, question, prompt

    def request(self, row):
        return {"id": row["id"], "audio": row["audio"], "question": row.get("question") or self.question}

    def score(self, pairs):
        extra: dict[str, list[str]] = {}
        for row, _ in pairs:
            extra.setdefault(row["label"], []).extend(row.get("synonyms") or [])
        labels = LabelSet.of(self.category, [row["label"] for row, _ in pairs], extra)
        items, per_label = [], {}
        for row, result in pairs:
            gold = labels.canonical(row["label"])
            predicted = None if failed(result) else find_label(answer_of(result), labels)
            items.append(item(row, result, label=gold, predicted=predicted, correct=predicted == gold))
            counts = per_label.setdefault(gold, {"n": 0, "correct": 0})
            counts["n"] += 1
            counts["correct"] += predicted == gold
        n = len(items)
        group = {"n": n, "errors": sum(failed(r) for _, r in pairs), "metric": "accuracy",
                 "accuracy": _round(sum(i["correct"] for i in items) / n) if n else None,
                 "unmatched": sum(i["predicted"] is None for i in items)}
        return TaskScore(self.name, n, group["errors"], {"all": group}, self.prompt, items,
                         {"per_label": per_label, "question": self.question})


class Grounding(Task):
    name = "grounding"
    needs = ("audio", "words", "start", "end")
    question = 'Find the start time and end time of the word "{words}"'
    prompt = ("the tutorial's question (TUTORIAL_zh.md, 多轮问答): " + question + "; the answer's span whose words match "
              "(else its first span) against the reference times: mean boundary error in ms over rows with a span. "
              "(eval_audio/evaluate_srwt.py scores the base model's word-timestamp transcripts: its average shift "
              "is twice this per word, `aas_ms`)")

    def request(self, row):
        return {"id": row["id"], "audio": row["audio"], "question": row.get("question") or
                self.question.format(words=row["words"])}

    def score(self, pairs):
        items, errors_ms = [], []
        for row, result in pairs:
            spans = [] if failed(result) else result.get("spans") or []
            want = norm.basic(str(row["words"]))
            span = next((s for s in spans if norm.basic(s.get("words") or "") == want), spans[0] if spans else None)
            reference = (float(row["start"]), float(row["end"]))
            error = None if span is None else round(boundary_error_ms((span["start"], span["end"]), reference), 1)
            if error is not None:
                errors_ms.append(error)
            items.append(item(row, result, words=row["words"], reference=list(reference),
                              span=None if span is None else [span["start"], span["end"]], boundary_error_ms=error))
        mean = round(statistics.fmean(errors_ms), 1) if errors_ms else None
        group = {"n": len(items), "errors": sum(failed(r) for _, r in pairs), "metric": "mean_boundary_error_ms",
                 "mean_boundary_error_ms": mean, "found": len(errors_ms),
                 "aas_ms": None if mean is None else round(2 * mean, 1)}
        return TaskScore(self.name, len(items), group["errors"], {"all": group}, self.prompt, items)


class AQA(Task):
    name = "aqa"
    needs = ("audio", "question", "answer")
    prompt = ("the row's question in words (eval_audio/evaluate_aqa.py sends the base model "
              "<|startofanalysis|><|en|><|question|>Q<|answer|>); correct when a yes/no reference is the first yes or "
              "no of the answer, else when the reference (or a synonym) appears in it; accuracy, and on yes/no "
              "questions alone as evaluate_aqa.py's bi_ACC")

    def request(self, row):
        return {"id": row["id"], "audio": row["audio"], "question": row["question"]}

    def score(self, pairs):
        items = []
        for row, result in pairs:
            gold, answer = norm.basic(str(row["answer"])), answer_of(result)
            if gold in ("yes", "no"):
                correct = yes_no(answer) == gold
            else:
                text = " " + norm.basic(answer) + " "
                options = [gold] + [norm.basic(s) for s in row.get("synonyms") or []]
                correct = any(o and re.search(rf"(?<!\S){re.escape(o)}(?!\S)", text) for o in options)
            items.append(item(row, result, question=row["question"], reference=row["answer"],
                              correct=bool(correct) and not failed(result), yes_no=gold in ("yes", "no")))
        groups = {}
        for name, members in (("all", items), ("yes/no", [i for i in items if i["yes_no"]])):
            if members or name == "all":
                groups[name] = {"n": len(members), "errors": sum("error" in i for i in members), "metric": "accuracy",
                                "accuracy": _round(sum(i["correct"] for i in members) / len(members)) if members else None}
        return TaskScore(self.name, len(items), groups["all"]["errors"], groups, self.prompt, items)


def _chat_prompt(question: str, source: str, published: str | None) -> str:
    base = f"; the published base-model prompt ({published}) is raw task tags the chat interface does not take" \
        if published else ""
    return f"asked {question!r} ({source}){base}; the label the answer names first (labels.find_label), accuracy"


TASKS: dict[str, Task] = {t.name: t for t in [
    ASR(),
    ST(),
    Classify("sound", "sound", "What is it",
             _chat_prompt("What is it", "TUTORIAL_zh.md, 环境音理解", "eval_audio/evaluate_scene.py, "
                          "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>")),
    Classify("instrument", "instrument", "what is the instrument",
             _chat_prompt("what is the instrument", "TUTORIAL_zh.md, 音乐分析", "eval_audio/evaluate_note_analysis.py, "
                          "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>")),
    Classify("emotion", "emotion", "What is the speaker's emotion?",
             _chat_prompt("What is the speaker's emotion?", "TUTORIAL_zh.md's 'What is his emotion', for any speaker",
                          "eval_audio/evaluate_emotion.py, "
                          "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>")),
    Classify("language", "language", "What language is the speaker speaking?",
             _chat_prompt("What language is the speaker speaking?", "no published prompt", None)),
    Grounding(),
    AQA(),
]}
