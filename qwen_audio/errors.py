"""The project's own exception types: every failure a user can cause names its culprit."""


class QwenAudioError(Exception):
    """Base class of every error raised on purpose by qwen_audio."""


class AudioError(QwenAudioError):
    """Audio that cannot be used: missing, unreadable, or empty."""


class AudioNotFoundError(AudioError, FileNotFoundError):
    """An audio path that does not exist."""


class AudioDecodeError(AudioError):
    """A file or buffer that no decoder could read."""


class EmptyAudioError(AudioError):
    """Audio with no samples."""


class AudioTooShortError(AudioError):
    """Audio too short to give the model one position (under 30 ms)."""


class AudioTooLongError(AudioError):
    """Audio longer than a limit, counted as it is decoded, never from what the header claims."""


class PromptError(QwenAudioError, ValueError):
    """A malformed prompt: an unclosed <audio> tag, or a prompt longer than the model's window."""


class OptionError(QwenAudioError, ValueError):
    """A generation or engine option that is unknown, of the wrong type, or out of range."""


class DeviceError(QwenAudioError, ValueError):
    """A device or dtype that cannot be used here."""


class NonFiniteError(QwenAudioError, ArithmeticError):
    """The model computed NaN or infinite logits (NaN weights, or float16 overflow)."""


class CheckpointError(QwenAudioError):
    """A checkpoint folder that is incomplete or does not match the model it claims to be."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model name that is neither a local folder, nor in the hub cache, nor downloadable."""


class TokenizerError(QwenAudioError):
    """A tokenizer table that is missing or disagrees with the model's config."""


class SlowPathWarning(UserWarning):
    """The chosen dtype runs slowly on this CPU (bfloat16 products emulated): a faster choice is named."""


class AudioTruncatedWarning(UserWarning):
    """Audio longer than the model's 30 s window: the rest is not heard."""
