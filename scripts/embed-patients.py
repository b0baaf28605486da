from exmed_bert.cli.embed import main
from exmed_bert.errors import run

if __name__ == "__main__":  # guarded: worker processes (spawn) import this file again
    run(main)
