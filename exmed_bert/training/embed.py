"""Patient embeddings: a pretrained or fine-tuned encoder's pooled vector for every (subject, prediction time)
of a task, as a Parquet table (the probe arm's input; users' own models can read it).

`run(args)` takes `EmbedArgs`; `embed_dataset` and `embedding_table` compute and return values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from transformers.utils import logging as hf_logging

from exmed_bert.data.collate import Collator, uses_time
from exmed_bert.data.layout import US_PER_DAY
from exmed_bert.data.splits import SPLITS
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError
from exmed_bert.data.layout import meds_subject_ids
from exmed_bert.io import write_parquet
from exmed_bert.model.modeling import ExMedBertModel
from exmed_bert.tasks import load_task_splits
from exmed_bert.training.args import EmbedArgs
from exmed_bert.training.finetune import TruncatedDataset, check_model_folder
from exmed_bert.training.runtime import resolve_device


def load_encoder(path: Path) -> ExMedBertModel:
    """The encoder of a pretraining or fine-tuning checkpoint (its heads are dropped); refused when any
    encoder weight is missing."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = ExMedBertModel.from_pretrained(path, use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"{path}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
        hf_logging.set_verbosity(level)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise UserError(f"{path}: the checkpoint lacks {len(missing)} encoder weight(s) ({', '.join(missing[:3])}...)")
    return model.eval()


@torch.no_grad()
def embed_dataset(encoder: ExMedBertModel, ds, pooling: str, batch_size: int = 64, device: str = "cpu",
                  max_length: int = 512) -> np.ndarray:
    """(N, H) float32 pooled encoder outputs of a task `PatientDataset`, in its row order, with the same
    truncation and time inputs as fine-tuning (`TruncatedDataset`, `Collator.for_model`)."""
    encoder.to(device).eval()
    data = TruncatedDataset(ds, max_length, with_days=uses_time(encoder.config))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                         collate_fn=Collator.for_model(encoder.config, mlm=False))
    out = [np.zeros((0, encoder.config.hidden_size), dtype=np.float32)]
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out.append(encoder(**batch, pooling=pooling).pooled_output.float().cpu().numpy())  # (B, H)
    return np.concatenate(out)


def prediction_times(ds) -> np.ndarray:
    """(N,) microseconds since 1970 per row: a MEDS label's prediction_time, else its prediction date at
    midnight."""
    if "prediction_times" in ds.data:
        return ds.data["prediction_times"].numpy().astype(np.int64)
    return ds.data["prediction_days"].numpy().astype(np.int64) * US_PER_DAY


def embedding_table(parts: list[tuple[str, object, np.ndarray]]) -> pa.Table:
    """One row per dataset row of each (split name, task PatientDataset, (N, H) embeddings), in that order:
    subject_id, prediction_time, split, label, embedding (fixed_size_list<float32>[H])."""
    ids = [pid for _, ds, _ in parts for pid in ds.patient_ids]
    vectors = np.concatenate([e for _, _, e in parts]).astype(np.float32)  # (rows, H)
    hidden = vectors.shape[1]
    return pa.table({
        # MEDS subject ids (int64) where the ids have them, else the ids as text
        "subject_id": (pa.array(subjects, pa.int64()) if (subjects := meds_subject_ids(ids)) is not None
                       else pa.array([str(p) for p in ids], pa.string())),
        "prediction_time": pa.array(np.concatenate([prediction_times(ds) for _, ds, _ in parts]),
                                    pa.int64()).cast(pa.timestamp("us")),
        "split": pa.array([name for name, ds, _ in parts for _ in range(len(ds))], pa.string()),
        "label": pa.array(np.concatenate([ds.data["labels"].numpy() for _, ds, _ in parts]).astype(np.int64)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), hidden),
    })


def run(args: EmbedArgs) -> pa.Table:
    """Load the model and the task splits, embed the chosen split(s), write --output; returns the table."""
    model_dir = check_model_folder(args.model_path)
    device = resolve_device(args.device)
    vocab = Vocab.load(model_dir / "vocab.json")
    out = Path(args.output)
    splits, _, _ = load_task_splits(args.data_dir, args.task_data, num_labels=args.num_labels,
                                    output_dir=out.parent, vocab=vocab)
    encoder = load_encoder(model_dir)
    if encoder.config.vocab_size != len(vocab):
        raise UserError(f"{model_dir}: config.json has vocab_size {encoder.config.vocab_size} but vocab.json has "
                        f"{len(vocab)} tokens; the folder mixes two models")
    pooling = args.pooling or encoder.config.classifier_pooling
    names = SPLITS if args.split == "all" else (args.split,)
    parts = [(name, splits[name], embed_dataset(encoder, splits[name], pooling, args.batch_size, device,
                                                args.max_length)) for name in names]
    table = embedding_table(parts)
    write_parquet(out, table)
    print(f"wrote {out}: {table.num_rows:,} rows ({', '.join(f'{n} {len(ds):,}' for n, ds, _ in parts)}), "
          f"{encoder.config.hidden_size}-d {pooling} embeddings from {model_dir}")
    return table
