"""The engine: conversations on one model, written by a scheduler (see `engine.py`, `scheduler.py`)."""

from .engine import Engine, EngineConfig, audio_spans, finish, stop_ids
from .pool import FeatureStore, Prefix, PrefixPool
from .scheduler import Scheduler, Tokens
from .sequence import Prepared, Sequence

__all__ = ["Engine", "EngineConfig", "FeatureStore", "Prefix", "PrefixPool", "Prepared", "Scheduler", "Sequence",
           "Tokens", "audio_spans", "finish", "stop_ids"]
