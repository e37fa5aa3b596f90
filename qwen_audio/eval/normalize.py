"""Text normalisers for scoring: Whisper's logic (written here), and the published Qwen-Audio evaluation's.

    normalize("Mr. Quilter's gospel!", "en")   -> "mister quilter is gospel"
    published("<|en|>Hello , world", "en")     -> "hello, world"

`normalize` is Whisper's `BasicTextNormalizer` for every language (openai/whisper,
whisper/normalizers/basic.py): lowercase, drop [bracketed] and (parenthesised) asides, turn symbols,
marks and punctuation into spaces, collapse spaces. For English it is its `EnglishTextNormalizer`
(whisper/normalizers/english.py) less two of its tables: hesitations dropped, titles and contractions
spelled out ("mr" -> "mister", "won't" -> "will not", "'s" -> " is"), periods and symbols removed,
diacritics folded. Not included: the number normaliser ("twenty one" -> "21") and the British-to-American
spelling list, so "colour"/"color" and "21"/"twenty one" still count as errors.

`published` is what eval_audio/evaluate_asr.py (QwenLM/Qwen-Audio) scores: special tokens removed,
spaces collapsed, no space before punctuation, lowercased (its EvaluationTokenizer with
lowercase=True); punctuation stays, so it is only comparable for answers written without it (the
base model's `<|wo_itn|>` transcripts).
"""

from __future__ import annotations

import re
import unicodedata

NO_SPACE_LANGUAGES = ("zh", "ja", "yue", "th", "lo", "my")  # scored by characters (CER), not words
PUBLISHED_PUNCTUATION = "!,.?;:"  # eval_audio/evaluate_asr.py PUNCS

# Letters NFKD does not split into a base letter and a mark (Whisper's ADDITIONAL_DIACRITICS).
_FOLDED = {"œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS", "đ": "d",
           "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "th", "ł": "l", "Ł": "L"}
_ASIDES = (re.compile(r"[<\[][^>\]]*[>\]]"), re.compile(r"\(([^)]+?)\)"))  # [noise], <unk>, (laughs)
_HESITATIONS = re.compile(r"\b(hmm|mm|mhm|mmm|uh|um)\b")
# Whisper's English replacements, in its order: contractions, titles, perfect tenses, then general
# contractions (the order matters: "won't" before "n't").
_ENGLISH = [(re.compile(p), r) for p, r in [
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"), (r"\bain't\b", "aint"),
    (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"), (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"),
    (r"\bi'ma\b", "i am going to"), (r"\bimma\b", "i am going to"), (r"\bwoulda\b", "would have"),
    (r"\bcoulda\b", "could have"), (r"\bshoulda\b", "should have"), (r"\bma'am\b", "madam"),
    (r"\bmr\b", "mister "), (r"\bmrs\b", "missus "), (r"\bst\b", "saint "), (r"\bdr\b", "doctor "),
    (r"\bprof\b", "professor "), (r"\bcapt\b", "captain "), (r"\bgov\b", "governor "), (r"\bald\b", "alderman "),
    (r"\bgen\b", "general "), (r"\bsen\b", "senator "), (r"\brep\b", "representative "),
    (r"\bpres\b", "president "), (r"\brev\b", "reverend "), (r"\bhon\b", "honorable "),
    (r"\basst\b", "assistant "), (r"\bassoc\b", "associate "), (r"\blt\b", "lieutenant "),
    (r"\bcol\b", "colonel "), (r"\bjr\b", "junior "), (r"\bsr\b", "senior "), (r"\besq\b", "esquire "),
    (r"'d been\b", " had been"), (r"'s been\b", " has been"), (r"'d gone\b", " had gone"),
    (r"'s gone\b", " has gone"), (r"'d done\b", " had done"), (r"'s got\b", " has got"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'s\b", " is"), (r"'d\b", " would"), (r"'ll\b", " will"),
    (r"'t\b", " not"), (r"'ve\b", " have"), (r"'m\b", " am"),
]]


def _symbols_to_spaces(s: str, fold: bool = False, keep: str = "") -> str:
    """Marks, symbols and punctuation (Unicode categories M, S, P) become spaces. `fold`: decompose
    (NFKD) and drop diacritics instead (é -> e); else compose (NFKC) and keep them."""
    out = []
    for c in unicodedata.normalize("NFKD" if fold else "NFKC", s):
        if c in keep:
            out.append(c)
        elif fold and c in _FOLDED:
            out.append(_FOLDED[c])
        elif fold and unicodedata.category(c) == "Mn":
            continue
        else:
            out.append(" " if unicodedata.category(c)[0] in "MSP" else c)
    return "".join(out)


def basic(text: str) -> str:
    """Whisper's BasicTextNormalizer (diacritics kept, letters not split)."""
    s = text.lower()
    for aside in _ASIDES:
        s = aside.sub("", s)
    return re.sub(r"\s+", " ", _symbols_to_spaces(s).lower()).strip()


def english(text: str) -> str:
    """Whisper's EnglishTextNormalizer without its number and spelling tables."""
    s = text.lower().replace("’", "'")  # curly apostrophes, so contractions match
    for aside in _ASIDES:
        s = aside.sub("", s)
    s = _HESITATIONS.sub("", s)
    s = re.sub(r"\s+'", "'", s)
    for pattern, replacement in _ENGLISH:
        s = pattern.sub(replacement, s)
    s = re.sub(r"(\d),(\d)", r"\1\2", s)  # 1,000 -> 1000
    s = re.sub(r"\.([^0-9]|$)", r" \1", s)  # periods, except in numbers
    s = _symbols_to_spaces(s, fold=True, keep=".%$¢€£")
    s = re.sub(r"[.$¢€£]([^0-9])", r" \1", s)  # currency and points not next to a number
    s = re.sub(r"([^0-9])%", r"\1 ", s)
    return re.sub(r"\s+", " ", s).strip()


def normalize(text: str, language: str | None = "en") -> str:
    """`text` as it is scored: `english` for English, else `basic`."""
    return english(text) if (language or "en") == "en" else basic(text)


def tokens(text: str, language: str | None = "en") -> list[str]:
    """The units an error rate counts after `normalize`: words, or characters for languages written
    without spaces (NO_SPACE_LANGUAGES)."""
    s = normalize(text, language)
    return list(s.replace(" ", "")) if language in NO_SPACE_LANGUAGES else s.split()


def published(text: str, language: str | None = "en") -> str:
    """eval_audio/evaluate_asr.py `remove_sp`, then lowercased as its EvaluationTokenizer does."""
    s = re.sub(r"<\|.*?\|>", " ", text)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(f" ?([{re.escape(PUBLISHED_PUNCTUATION)}])", r"\1", s).lstrip(" ")
    if language == "zh":
        s = re.sub(r"\s+", "", s)
    return s.lower()


def published_tokens(text: str, language: str | None = "en") -> list[str]:
    """The units evaluate_asr.py counts: whitespace-separated items, characters for Chinese."""
    items = published(text, language).split()
    return list("".join(items)) if language == "zh" else items
