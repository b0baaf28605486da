from exmed_bert.cli.convert import main
from exmed_bert.errors import run
run(main)
