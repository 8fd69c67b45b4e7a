"""Evaluations shared by the stages: long-context probes (``longctx``)."""
