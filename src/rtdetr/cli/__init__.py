"""The `rtdetr` command line: `rtdetr --help` lists the verbs; each verb imports only what it uses."""
from rtdetr.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
