"""Lightning training: the module, callbacks and the `train` entry point."""
