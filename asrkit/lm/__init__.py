"""Language models for decoding: n-gram models in ARPA format (:mod:`asrkit.lm.ngram`)."""
