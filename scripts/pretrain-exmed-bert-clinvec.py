from exmed_bert.cli.pretrain import main
from exmed_bert.errors import run
run(lambda: main(prog="pretrain-exmed-bert-clinvec.py"))
