"""Synthetic claims generator: disease modules over real code systems, a planted task and its oracle.

Entry point: `generate(Params(...), output, task_output)` in `exmed_bert.synthetic.cohort`; the CLI is
`exmed_bert.cli.generate`. The demo embedding vocabulary is `embedding_vocab.demo_codes()`.
"""
