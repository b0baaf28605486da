"""Synthetic claims generator: disease modules over real code systems, a planted task and its oracle.

The stage is `cohort.run(GenerateArgs)` (settings in `args.py`); the core is
`cohort.generate(Params(...), output, task_output)`; `--task trajectory` simulates the latent disease
processes of `processes.py` (`trajectory.py`, its risk in `trajectory_risk.py`, its codes in `code_space.py`). The demo embedding vocabulary is
`embedding_vocab.demo_codes()`, and `clinvec_demo` writes it as demo ClinVec files.
"""
