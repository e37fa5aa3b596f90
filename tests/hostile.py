"""Hostile inputs shared by the decoder's tests and the server's: scripts and playlists that name a file,
images, FLAC whose header hides its length, and a watch that tells whether anything opened a FIFO."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import wave
import zlib
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from qwen_audio.audio import SAMPLE_RATE

from .synthetic import tone

FIFO = "secret.wav"  # the server's file a script names: a FIFO, so that opening it shows
WATCH = 0.2  # seconds the FIFO is watched at least (a reader of it blocks until the watcher gets in)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV of float samples [n]."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.asarray(samples) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@contextmanager
def nothing_opens(fifo: Path):
    """Fail when anything opens `fifo` for reading while the block runs. A writer's non-blocking open
    succeeds only while a reader has the FIFO open or waits in open(), and such a reader waits until a
    writer comes, so a thread trying until the block is over (and WATCH s at least) cannot miss one.
    If it gets in, it feeds a small WAV and closes: a reader (FFmpeg) cannot hang the test."""
    done, opened = threading.Event(), []

    def watch():
        start = time.monotonic()
        while not (done.is_set() and time.monotonic() - start >= WATCH) and time.monotonic() - start < 30:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader
                time.sleep(0.002)
                continue
            opened.append(True)
            try:
                os.set_blocking(fd, True)
                os.write(fd, wav_bytes(tone(0.1)))
            except OSError:
                pass
            finally:
                os.close(fd)
            return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not opened, f"something opened {fifo.name}"


def png() -> bytes:
    """A 1x1 grey PNG (FFmpeg's png_pipe demuxer claims it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b"")


def bmp() -> bytes:
    """A 1x1 24-bit BMP (bmp_pipe)."""
    pixels = b"\x80\x80\x80\x00"
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def hls(entry: str) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{entry}\n#EXT-X-ENDLIST\n"


SCRIPTS = {  # name -> the script, given the FIFO's absolute path ("secret.wav" is relative to the reader)
    "ffconcat": lambda fifo: f"ffconcat version 1.0\nfile {FIFO}\n",
    "ffconcat-absolute": lambda fifo: f"ffconcat version 1.0\nfile {fifo}\n",
    "concat-list": lambda fifo: f"file '{FIFO}'\n",
    "ffconcat-file-url": lambda fifo: f"ffconcat version 1.0\nfile 'file:{fifo}'\n",
    "ffconcat-subfile": lambda fifo: f"ffconcat version 1.0\nfile 'subfile,,start,0,end,0,,:{FIFO}'\n",
    "ffconcat-concat-protocol": lambda fifo: f"ffconcat version 1.0\nfile 'concat:{FIFO}|{fifo}'\n",
    "ffconcat-tee": lambda fifo: f"ffconcat version 1.0\nfile 'tee:{FIFO}'\n",
    "hls": lambda fifo: hls(FIFO),
    "hls-absolute": lambda fifo: hls(str(fifo)),
    "hls-file-url": lambda fifo: hls(f"file:{fifo}"),
    "hls-subfile": lambda fifo: hls(f"subfile,,start,0,end,0,,:{fifo}"),
    "hls-concat-protocol": lambda fifo: hls(f"concat:{FIFO}|{fifo}"),
    "hls-tee": lambda fifo: hls(f"tee:{fifo}"),
    "dash": lambda fifo: ('<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
                          'mediaPresentationDuration="PT10S"><Period><AdaptationSet mimeType="audio/wav">'
                          f'<Representation id="1" bandwidth="1"><BaseURL>{FIFO}</BaseURL></Representation>'
                          '</AdaptationSet></Period></MPD>'),
    "sbg": lambda fifo: "-SE\na: 300+2.5/3\nNOW a\n+0:00:02 a\n",  # synthesises 2 s of binaural beats
    "png": lambda fifo: png(),
    "bmp": lambda fifo: bmp(),
}


def flac_bytes(pcm: np.ndarray) -> bytes:
    """16-bit mono 16 kHz FLAC of int16 samples [n], written by PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        for i in range(0, len(pcm), 10 * SAMPLE_RATE):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 10 * SAMPLE_RATE], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def with_stated_samples(flac: bytes, n: int) -> bytes:
    """`flac` with STREAMINFO's total-samples field set to `n` (0: unknown). After "fLaC" and the 4-byte block
    header, STREAMINFO holds block sizes (4 bytes) and frame sizes (6); bytes 18..25 are then one big-endian
    64-bit field: rate (20 bits), channels - 1 (3), bits per sample - 1 (5), total samples (36)."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0  # STREAMINFO comes first
    field = int.from_bytes(flac[18:26], "big")
    assert field >> 44 == SAMPLE_RATE and (field >> 36) & 0xFF == 15  # 16 kHz, mono, 16 bits: the layout holds
    field = field & ~((1 << 36) - 1) | n
    return flac[:18] + field.to_bytes(8, "big") + flac[26:]
