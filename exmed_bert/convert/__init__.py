"""Conversion: patient records (JSON, JSONL, MEDS) and task labels -> the encoded datasets, vocab.json and
a manifest that `exmed_bert.data` reads at training time. `run(ConvertArgs)` is the stage."""
