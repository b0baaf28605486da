"""Synthetic claims generator: disease modules over real code systems, a planted task and its oracle.

The stage is `cohort.run(GenerateArgs)` (settings in `args.py`); the core is
`cohort.generate(Params(...), output, task_output)`. The demo embedding vocabulary is
`embedding_vocab.demo_codes()`, and `clinvec_demo` writes it as demo ClinVec files.
"""
