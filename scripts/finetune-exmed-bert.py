from exmed_bert.cli.finetune import main
from exmed_bert.errors import run

run(main)
