"""The ExMed-BERT model, in Hugging Face's conventions: `configuration.ExMedBertConfig`, the models in
`modeling` (importing it registers them with transformers' Auto* factories), and `architecture`: the
size presets and choice lists, light enough for config.yaml and --help to read."""
