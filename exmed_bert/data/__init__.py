"""What training reads: the encoded dataset (`PatientDataset`), the vocabulary, the split of record,
masking, the batch sampler and the collator. Conversion, which writes these files, is `exmed_bert.convert`."""
