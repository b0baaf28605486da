"""Command-line entry points: one module per pipeline stage, each with `Args` and `main(argv)`."""
