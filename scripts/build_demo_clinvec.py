from exmed_bert.cli.build_demo_clinvec import main
from exmed_bert.errors import run

run(main)
