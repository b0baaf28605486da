from exmed_bert.cli.baselines import main_rf
from exmed_bert.errors import run

run(main_rf)
