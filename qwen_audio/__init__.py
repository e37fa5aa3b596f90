"""qwen-audio: Qwen-Audio-Chat, faithful and fast, with no remote code.

    import qwen_audio
    model, tokenizer = qwen_audio.load("Qwen/Qwen-Audio-Chat")      # or "lite", or a checkpoint folder
    query = tokenizer.from_list_format([{'audio': 'a.flac'}, {'text': 'what is that sound?'}])
    response, history = model.chat(tokenizer, query, history=None)
"""

from .api import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, QwenAudioForCausalLM, load
from .audio import Clip, load_audio, load_clip
from .backend import Backend, ChatStream, Segment, SoundEvent, Transcript, TranscriptStream, TurnStats, Word
from .config import AudioConfig, ModelConfig
from .engine import Engine, EngineConfig
from .errors import (
    AudioDecodeError,
    AudioError,
    AudioNotFoundError,
    AudioTooShortError,
    AudioTruncatedWarning,
    CheckpointError,
    DeviceError,
    EmptyAudioError,
    ModelNotFoundError,
    NonFiniteError,
    OptionError,
    PromptError,
    QwenAudioError,
    SlowPathWarning,
    TokenizerError,
)
from .messages import Audio, Message, Text
from .models.processor import Qwen2AudioProcessor
from .models.qwen2_audio_chat import Qwen2AudioChat, Qwen2AudioForConditionalGeneration
from .options import GenerationConfig
from .tokenizer import QwenTokenizer

__version__ = "0.2.0"

__all__ = [
    "Audio", "AudioConfig", "AudioDecodeError", "AudioError", "AudioNotFoundError", "AudioTooShortError",
    "AudioTruncatedWarning", "AutoModelForCausalLM", "AutoProcessor", "AutoTokenizer", "Backend", "ChatStream",
    "CheckpointError", "Clip", "DeviceError", "EmptyAudioError", "Engine", "EngineConfig", "GenerationConfig",
    "Message", "ModelConfig", "ModelNotFoundError", "NonFiniteError", "OptionError", "PromptError", "Qwen2AudioChat",
    "Qwen2AudioForConditionalGeneration", "Qwen2AudioProcessor", "QwenAudioError", "QwenAudioForCausalLM",
    "QwenTokenizer", "Segment", "SlowPathWarning", "SoundEvent", "Text", "TokenizerError", "Transcript", "TranscriptStream",
    "TurnStats", "Word", "load", "load_audio", "load_clip",
]
