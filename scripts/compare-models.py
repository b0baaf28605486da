from exmed_bert.cli.compare import main
from exmed_bert.errors import run

run(main)
