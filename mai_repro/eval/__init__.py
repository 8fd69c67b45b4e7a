"""Evaluations shared by the stages: the evaluation module (``metrics``: task accuracy over
samples, pass@k, answer entropy, per-family NLL and bits per byte, checkpoints of a run
directory), long-context probes (``longctx``) and the report card that reads every stage's
manifest (``report``, notebook 13)."""
