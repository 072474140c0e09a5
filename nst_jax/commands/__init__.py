"""Subcommands of ``nst-jax``; each module has HELP, add_arguments(parser) and run(args)."""
