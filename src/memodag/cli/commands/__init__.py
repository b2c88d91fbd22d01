"""The CLI's command groups, one module each; ``memodag.cli.main`` imports them on first use."""
