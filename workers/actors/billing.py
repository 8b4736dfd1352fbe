from workers import jobs_pending
from workers.actors import job_actor

coin_deduction = job_actor("coin_deduction", jobs_pending.coin_deduction)
