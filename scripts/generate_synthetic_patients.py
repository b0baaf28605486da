from exmed_bert.cli.generate import main
from exmed_bert.errors import run
run(main)
