"""The experiment dir, below both training and decoding: checkpoints (save, load, select,
average), the model and device a decoder or trainer loads (:mod:`~asrkit.exp.checkpoint`),
and the files an exp dir carries with it (tokenizer, CMVN; :mod:`~asrkit.exp.expdir`).

``asrkit.train`` writes experiment dirs and ``asrkit.decode`` reads them; both import from
here and neither from the other.
"""
