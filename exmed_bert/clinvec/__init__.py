"""ClinVec code embeddings, a pure core: the release's layout and which folder a run reads (`release`:
the release in --clinvec-dir, else the demo release beside it), its reader (`loader`), code matching with
hierarchical fallback (`match`), resizing to the code table's width (`resize`), the rows and coverage
report of an initialisation (`init`), and freezing those rows for a while (`freeze`).

Nothing here writes a file or prints: pretraining does (clinvec_coverage.json, the summary, the DEMO
warning). The demo release is built by its own command (`exmed_bert.synthetic.clinvec_demo`).
"""
