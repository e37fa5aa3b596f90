"""qwen-audio: Qwen-Audio-Chat, faithful and fast, with no remote code.

    from qwen_audio import AutoTokenizer, AutoModelForCausalLM, GenerationConfig
    model, tokenizer = qwen_audio.load("Qwen/Qwen-Audio-Chat")
"""

from .api import AutoModelForCausalLM, AutoTokenizer, QwenAudioForCausalLM, load
from .audio import Clip, load_audio, load_clip
from .chat import ChatStream, TurnStats
from .config import AudioConfig, ModelConfig
from .errors import (
    AudioDecodeError,
    AudioError,
    AudioNotFoundError,
    AudioTruncatedWarning,
    CheckpointError,
    EmptyAudioError,
    ModelNotFoundError,
    PromptError,
    QwenAudioError,
    TokenizerError,
)
from .generate import GenerationConfig
from .tokenizer import QwenTokenizer

__version__ = "0.1.0"
__all__ = [
    "AudioConfig", "AudioDecodeError", "AudioError", "AudioNotFoundError", "AudioTruncatedWarning",
    "AutoModelForCausalLM", "AutoTokenizer", "ChatStream", "CheckpointError", "Clip", "EmptyAudioError",
    "GenerationConfig", "ModelConfig", "ModelNotFoundError", "PromptError", "QwenAudioError",
    "QwenAudioForCausalLM", "QwenTokenizer", "TokenizerError", "TurnStats", "load", "load_audio", "load_clip",
]
