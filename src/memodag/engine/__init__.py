"""The engine: walks a plan, decides memoized-or-run per step, hands attempts to an executor."""
