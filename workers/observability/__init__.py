"""What lets an operator see the workers: logging and Sentry, both subscribers of the run
hooks (workers.engine.hooks), set up where a process boots."""
