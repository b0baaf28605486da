"""One embedding vector per patient from a pretrained checkpoint: the [CLS] or the mean hidden state.

Shows: `ExMedBertModel.from_pretrained(<checkpoint-best>)` (the encoder alone; the pretraining heads are
dropped), checking the dataset was encoded with the checkpoint's own vocab.json, batching with
`Collator(mlm=False)`, and `pooled_output` (P, H). Writes <output> (.npy: float32 (N, H); .csv: patient_id
then H columns) and, for .npy, the row order as <output stem>_ids.csv. Needs pretrain_tiny.py first.

    python examples/embed_patients.py --workdir examples_out --pooling mean
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry, run


@dataclass
class Args:
    """Embed every patient of a dataset with a pretrained ExMed-BERT."""

    workdir: str = field(default="examples_out", metadata={"help": "folder of the earlier examples"})
    model_path: Optional[str] = field(default=None, metadata={
        "help": "checkpoint folder (default: <workdir>/model/checkpoint-best)"})
    data: Optional[str] = field(default=None, metadata={
        "help": "dataset .pt (default: <workdir>/pretrain_stuff/synthetic_test.pt)"})
    pooling: str = field(default="cls", metadata={"help": "[CLS] state or masked mean", "choices": ["cls", "mean"]})
    output: Optional[str] = field(default=None, metadata={
        "help": "embeddings file, .npy or .csv (default: <workdir>/embeddings.npy)"})
    batch_size: int = field(default=32, metadata={"help": "patients per forward pass"})
    tiny: bool = field(default=False, metadata={"help": "accepted for symmetry with the other examples"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="embed_patients.py")
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from exmed_bert.data.collate import Collator, batched_view
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab
    from exmed_bert.io import atomic_write
    from exmed_bert.model.modeling import ExMedBertModel

    work = Path(args.workdir)
    model_path = Path(args.model_path or work / "model" / "checkpoint-best")
    data = Path(args.data or work / "pretrain_stuff" / "synthetic_test.pt")
    output = Path(args.output or work / "embeddings.npy")
    if not (model_path / "model.safetensors").is_file():
        raise UserError(f"{model_path}: no model.safetensors; pass --model-path with a checkpoint-best folder")
    if output.suffix not in (".npy", ".csv"):
        raise UserError(f"--output {output}: use a .npy or .csv file name")

    # The codes' ids only mean something with the vocabulary the model was trained with.
    vocab = Vocab.load(model_path / "vocab.json")
    data_vocab = Vocab.load(data.parent / "vocab.json")
    if list(vocab.tokens) != list(data_vocab.tokens):
        raise UserError(f"{data}: encoded with another vocabulary than {model_path}/vocab.json; "
                        "convert the patients with the model's own conversion")
    # Loading the encoder alone leaves the pretraining heads' weights unused; that report is noise here.
    hf_logging.set_verbosity_error()
    model = ExMedBertModel.from_pretrained(model_path, use_safetensors=True).eval()
    ds = PatientDataset.load(data)

    # a model pretrained with --time-buckets also needs each code's time before the prediction date
    collate = Collator(mlm=False, time_buckets=model.config.time_buckets)
    loader = torch.utils.data.DataLoader(batched_view(ds, collate), batch_size=args.batch_size, collate_fn=collate)
    rows = []
    with torch.no_grad():
        for batch in loader:
            batch.pop("labels", None)                                     # task labels are not model inputs here
            rows.append(model(**batch, pooling=args.pooling).pooled_output)  # (B, H)
    emb = torch.cat(rows).float().numpy()                                 # (N, H), dataset order

    if output.suffix == ".npy":
        with atomic_write(output, "wb", encoding=None) as f:
            np.save(f, emb)
        with atomic_write(output.with_name(output.stem + "_ids.csv")) as f:
            f.write("row,patient_id\n" + "".join(f"{i},{pid}\n" for i, pid in enumerate(ds.patient_ids)))
    else:
        with atomic_write(output) as f:
            f.write("patient_id," + ",".join(f"e{j}" for j in range(emb.shape[1])) + "\n")
            for pid, vec in zip(ds.patient_ids, emb):
                f.write(pid + "," + ",".join(f"{v:.6g}" for v in vec) + "\n")
    print(f"embedded {emb.shape[0]} patients of {data} with {model_path} ({args.pooling} pooling): "
          f"({emb.shape[0]}, {emb.shape[1]}) float32 -> {output}")
    return 0


if __name__ == "__main__":
    run(main)
