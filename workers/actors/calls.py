from workers.actors import job_actor
from workers.calls import call_cleanup as end_overdue_calls

call_cleanup = job_actor("call_cleanup", end_overdue_calls)
