"""Development tools, outside the workers package (and the production image): the embedded
PostgreSQL and Redis servers, and `make run`'s all-in-one supervisor."""
