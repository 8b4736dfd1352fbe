"""The jobs: one module per job of the table (workers.schedule), named as the job, beside
its SQL in db/ of the same name. A module holds the job's work function, its parameters'
model (JobParams) and the rules it runs; the engine knows it only through its row."""
