"""Generate a small synthetic cohort with the library, convert it, and print one decoded patient.

Shows: `exmed_bert.synthetic.cohort.generate` (patients JSON + task CSV), `exmed_bert.convert.conversion.
convert_patients` (train/val/test datasets, vocab.json, task datasets), and reading a split back with
`PatientDataset.load` + `Vocab.load`. Writes <workdir>/data/ and <workdir>/pretrain_stuff/, the layout the
other examples (and the scripts' defaults) expect.

    python examples/generate_and_inspect.py --workdir examples_out --tiny
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry, run


@dataclass
class Args:
    """Generate patients, convert them, decode one patient."""

    workdir: str = field(default="examples_out", metadata={"help": "folder for data/ and pretrain_stuff/"})
    num_patients: int = field(default=200, metadata={"help": "patients to generate"})
    tiny: bool = field(default=False, metadata={"help": "50 patients, 64 tokens each: runs in seconds"})
    max_length: int = field(default=256, metadata={"help": "tokens kept per patient"})
    seed: int = field(default=42, metadata={"help": "generator and split seed"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="generate_and_inspect.py")
    from exmed_bert.data.inspect import describe_patient
    from exmed_bert.convert import convert_patients
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab
    from exmed_bert.synthetic.cohort import Params, generate

    n, max_length = (50, 64) if args.tiny else (args.num_patients, args.max_length)
    work = Path(args.workdir)
    patients, task = work / "data" / "synthetic_patients.json", work / "data" / "task_specific.csv"

    # 1. Generate: real ICD-10-CM / ATC / CPT codes, hospital stays, and a planted heart-failure task.
    meta = generate(Params(num_patients=n, novel_prob=0.01, seed=args.seed, start_date="2020-01-01",
                           end_date="2024-12-31", task_horizon_days=365), str(patients), str(task), progress=False)
    print(f"generated {n} patients -> {patients}; task prevalence {meta['task']['prevalence']:.1%}")

    # 2. Convert: one vocabulary from the training split; the task datasets are cut at each prediction date.
    manifest = convert_patients(patients, work / "pretrain_stuff" / "synthetic.pt", max_length=max_length,
                                seed=args.seed, task_data=task, progress=False)
    splits = ", ".join(f"{name} {info['patients']}" for name, info in manifest["splits"].items())
    print(f"converted: {splits} patients; vocabulary {manifest['vocab_size']} tokens")

    # 3. Read a split back: a plain dict of tensors, memory-mapped; ds[i] gives one patient's 1-D tensors.
    ds = PatientDataset.load(work / "pretrain_stuff" / "synthetic_train.pt")
    vocab = Vocab.load(work / "pretrain_stuff" / "vocab.json")
    item = ds[0]
    print(f"train split: {len(ds)} patients; patient 0 has {len(item['input_ids'])} tokens "
          f"(keys: {', '.join(sorted(item))})")
    print("\n".join(describe_patient(ds, vocab, 0)[:8]))
    return 0


if __name__ == "__main__":
    run(main)
