"""Evaluation tools: STS quality (sts.py, the SentEval protocol) and speed and memory (speed.py, behind `tinyhpd bench`).
Both use only NumPy and the standard library; the PyTorch reference row of `eval sts --reference torch` is optional."""
