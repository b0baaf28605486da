"""Command-line entry points, one module per script: `main(argv)` parses the stage's args class and calls
its `run(args)`."""
