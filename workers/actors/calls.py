from workers import jobs_pending
from workers.actors import job_actor

call_cleanup = job_actor("call_cleanup", jobs_pending.call_cleanup)
