from exmed_bert.cli.pretrain import main
from exmed_bert.errors import run
run(main)
