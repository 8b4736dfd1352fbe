from workers.actors import job_actor
from workers.billing import coin_deduction as charge_ongoing_calls

coin_deduction = job_actor("coin_deduction", charge_ongoing_calls)
