"""asrkit: Kaldi-style staged speech recognition with modern PyTorch models."""

__version__ = "0.1.0"
