from workers import jobs_pending
from workers.actors import job_actor

badge_assignment = job_actor("badge_assignment", jobs_pending.badge_assignment)
