"""ExMed-BERT: a BERT over patients' medical-code histories (ICD-10-CM, ATC, CPT, age, sex)."""

__version__ = "0.1.0"
