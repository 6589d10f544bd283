"""asrkit: Kaldi-style staged speech recognition with modern PyTorch models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``asrkit.Transcriber`` (:class:`asrkit.decode.transcribe.Transcriber`), imported on
    first use so that ``import asrkit`` stays light."""
    if name == "Transcriber":
        from asrkit.decode.transcribe import Transcriber

        return Transcriber
    raise AttributeError(f"module 'asrkit' has no attribute {name!r}")
