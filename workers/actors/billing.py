from workers.actors import job_actor
from workers.billing import coin_deduction as charge_ongoing_calls
from workers.schedule import JOBS

#: The billing actors by name: coin_deduction, or one per shard (BILLING_SHARDS).
ACTORS = {job.name: job_actor(job.name, charge_ongoing_calls)
          for job in JOBS.values() if job.shard is not None}
