from exmed_bert.cli.baselines import main_xgboost
from exmed_bert.errors import run

run(main_xgboost)
