"""Evaluations shared by the stages: long-context probes (``longctx``) and the report card that
reads every stage's manifest (``report``, notebook 12)."""
