"""Scores: error rates over edit distance, sacreBLEU, boundary error of word times.

    error_rate(["the cat sat"], ["the cat sit"])              -> ErrorRate(errors=1, length=3), .rate 0.333
    corpus_bleu(["the dog bit the man"], [["the dog bit the man"]])  -> 100.0
    boundary_error_ms((6.29, 7.16), (6.28, 7.15))           -> 10.0

Error rates are corpus-level, as the published scripts and jiwer compute them: the sum of edit
distances over the sum of reference lengths (not a mean of per-utterance rates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences (substitutions, deletions and insertions cost 1).
    O(len(ref) * len(hyp)) time, O(len(hyp)) memory."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class ErrorRate:
    """Edit operations against reference units (words or characters)."""

    errors: int  # substitutions + deletions + insertions
    length: int  # units in the references

    @property
    def rate(self) -> float | None:
        """errors / length; None when the references are empty."""
        return self.errors / self.length if self.length else None

    def __add__(self, other: "ErrorRate") -> "ErrorRate":
        return ErrorRate(self.errors + other.errors, self.length + other.length)


def error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> ErrorRate:
    """Corpus error rate of tokenised hypotheses against tokenised references (str items are split
    on whitespace)."""
    total = ErrorRate(0, 0)
    for ref, hyp in zip(refs, hyps, strict=True):
        ref = ref.split() if isinstance(ref, str) else list(ref)
        hyp = hyp.split() if isinstance(hyp, str) else list(hyp)
        total += ErrorRate(edit_distance(ref, hyp), len(ref))
    return total


def bleu_tokenizer(language: str | None) -> str:
    """sacreBLEU's tokenizer for a target language, as eval_audio/evaluate_st.py picks it: "ja-mecab"
    for Japanese, "zh" for Chinese, else "13a" (Japanese falls back to "char" without sacrebleu[ja])."""
    if language == "ja":
        try:
            import MeCab  # noqa: F401  (sacrebleu[ja])
            return "ja-mecab"
        except ImportError:
            return "char"
    return "zh" if language == "zh" else "13a"


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], tokenize: str = "13a") -> float:
    """sacreBLEU's corpus BLEU (0-100) of `hyps` against reference streams `refs` (each stream has one
    reference per hypothesis), with its default settings otherwise."""
    try:
        import sacrebleu
    except ImportError as e:
        from ..errors import QwenAudioError

        raise QwenAudioError(f"BLEU needs sacrebleu: pip install 'qwen-audio[scale]' ({e})") from None
    return float(sacrebleu.corpus_bleu(list(hyps), [list(r) for r in refs], tokenize=tokenize).score)


def boundary_error_ms(predicted: tuple[float, float], reference: tuple[float, float]) -> float:
    """Mean distance of a span's two boundaries from the reference's, in milliseconds. The published
    word-timestamp metric (eval_audio/evaluate_srwt.py, AverageShiftCalculator) adds the two per word:
    its average shift is twice this."""
    (ps, pe), (rs, re_) = predicted, reference
    return 1000 * (abs(ps - rs) + abs(pe - re_)) / 2
