"""The small LFM2-MoE that ships with lfm2_edu: its corpus, tokenizer, training and build.

`python -m lfm2_edu.tiny.build` (or `make small-model`) rebuilds everything from scratch with no
download: the corpus from texts that ship with Python, a byte-level BPE tokenizer, and two training
runs of the same recipe, with and without the expert-bias load balancing.
"""
