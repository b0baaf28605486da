"""ClinVec code embeddings, a pure core: the release's layout (`release`), its reader (`loader`), code
matching with hierarchical fallback (`match`), resizing to the code table's width (`resize`), the rows and
coverage report of an initialisation (`init`), and freezing those rows for a while (`freeze`).

Nothing here writes a file or prints: pretraining does (clinvec_coverage.json, the summary). The demo
embeddings and the choice of folder (real release or demo) are `exmed_bert.synthetic.clinvec_demo`.
"""
