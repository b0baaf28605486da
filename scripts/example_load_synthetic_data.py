from exmed_bert.cli.example_load import main
from exmed_bert.errors import run
run(main)
