from workers import jobs_pending
from workers.actors import job_actor

presence_cleanup = job_actor("presence_cleanup", jobs_pending.presence_cleanup)
